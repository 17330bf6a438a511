"""Motion in the twin: its collision world, trajectory planning and checking, and the guarded arm.

Everything here works from what the twin knows through its sensors and the room's datasheet
parts (:class:`RoomModel`); nothing reads the simulated room.
"""
