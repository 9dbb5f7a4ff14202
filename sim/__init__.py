"""The simulator: hubs, rigs, rig controllers, an operator and pallets, in place of hardware."""
