"""The wiring of a rig: open the devices a rig file names, and hand the twin's side its ports.

Above the HAL, the drivers and the evaluation code (it equips a simulated rig with the simulated
clinician); commands, benches, scenarios and environments call it.
"""
