"""Built-in losses, registered through the same hook as third-party plugins."""

from __future__ import annotations

from crystalgnn_plugins.hookspecs import hookimpl


@hookimpl
def register_losses(register):
    from crystalgnn_plugins.training import losses

    register("mae", losses.MAELoss, description="mean absolute error of one property")
    register("mse", losses.MSELoss, description="mean squared error of one property")
    register("huber", losses.HuberLoss, description="Huber loss of one property")
    register(
        "energy_force_stress",
        losses.EnergyForceStressLoss,
        description="weighted energy-per-atom + force + stress (GPa) loss for potentials",
    )
