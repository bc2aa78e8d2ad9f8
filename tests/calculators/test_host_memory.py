"""The host-memory setting: process-wide, idempotent, reversible, honest where it
cannot apply; the calculator and the batched relaxer switch it on unless told not to."""

import platform
import sys

import numpy as np
import pytest
import torch
from ase.build import bulk

from crystalgnn_plugins.calculators import GNNCalculator, host_memory, reuse_host_memory
from crystalgnn_plugins.models import EnergyModel
from crystalgnn_plugins.relaxation.batched_fire import BatchedFIRE

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc allocator only"
)


@pytest.fixture
def restore_allocator():
    before = host_memory.host_memory_reused()
    yield
    reuse_host_memory(before)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return EnergyModel("smooth_cgcnn", {"atom_features": 8, "num_conv": 1, "cutoff": 4.0}, elements=["Cu"], hidden=8).eval()


@glibc
def test_setting_is_idempotent_and_reversible(monkeypatch, restore_allocator):
    calls = []
    real = host_memory._mallopt()

    def spy(param, value):
        calls.append((param, value))
        return real(param, value)  # the real glibc call must accept the values

    host_memory._state["keep"] = False
    monkeypatch.setattr(host_memory, "_mallopt", lambda: spy)
    assert reuse_host_memory() is True and host_memory.host_memory_reused()
    assert reuse_host_memory() is True  # already in effect: no second call
    assert calls == [(-3, host_memory.KEEP_MMAP_THRESHOLD), (-1, host_memory.KEEP_TRIM_THRESHOLD)]
    assert host_memory.KEEP_TRIM_THRESHOLD == -1  # glibc: trimming off
    assert reuse_host_memory(False) is True and not host_memory.host_memory_reused()
    assert calls[2:] == [(-3, 128 * 1024), (-1, 128 * 1024)]


def test_without_glibc_nothing_changes(monkeypatch, restore_allocator):
    host_memory._state["keep"] = False
    monkeypatch.setattr(host_memory, "_mallopt", lambda: None)
    assert reuse_host_memory() is False
    assert not host_memory.host_memory_reused()


@pytest.mark.parametrize("reuse", [True, False])
def test_calculator_and_relaxer_switch_it_on_unless_disabled(monkeypatch, model, reuse):
    seen = []
    monkeypatch.setattr(host_memory, "_mallopt", lambda: (lambda p, v: seen.append(p) or 1))
    monkeypatch.setitem(host_memory._state, "keep", False)
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.calc = GNNCalculator(model, device="cpu", reuse_memory=reuse)
    assert np.isfinite(atoms.get_potential_energy())
    assert host_memory.host_memory_reused() is reuse
    monkeypatch.setitem(host_memory._state, "keep", False)
    BatchedFIRE(model, reuse_memory=reuse)
    assert host_memory.host_memory_reused() is reuse


@pytest.mark.parametrize("reuse", [True, False])
def test_structure_source_switches_it_on_unless_disabled(monkeypatch, reuse, tmp_path):
    from crystalgnn_plugins.generation import CrystalFlow, CrystalStructureSource

    monkeypatch.setattr(host_memory, "_mallopt", lambda: (lambda p, v: seen.append(p) or 1))
    monkeypatch.setitem(host_memory._state, "keep", False)
    seen = []
    torch.manual_seed(0)
    flow = CrystalFlow(elements=["Cu", "O"], conditions=["toy"], hidden=8, num_layers=1)
    CrystalStructureSource(flow, physics=False, reuse_memory=reuse)
    assert host_memory.host_memory_reused() is reuse and bool(seen) is reuse


def test_capped_glibc_falls_back_to_its_largest_mmap_threshold(monkeypatch, restore_allocator):
    """A glibc that refuses a 1 GiB mmap threshold still gets trimming turned off."""
    calls = []

    def capped(param, value):
        calls.append((param, value))
        return 0 if (param == -3 and value > 32 * 2**20) else 1

    host_memory._state["keep"] = False
    monkeypatch.setattr(host_memory, "_mallopt", lambda: capped)
    assert reuse_host_memory() is True
    assert calls == [(-3, host_memory.KEEP_MMAP_THRESHOLD), (-3, 32 * 2**20), (-1, -1)]
