"""The robot as designed: Panda constants and URDF, kinematics, the nominal model.

Shared by the simulated room (which perturbs it into the arm as built) and the twin (which
only knows the nominal model), so neither imports the other.
"""
