"""Patient anatomy: CT and label loading, surface meshes, the patient model, vertebral shape models.

Import the submodule you need (``twinsim.anatomy.ct``, ``.patient``, ``.ssm``...): importing the
package itself loads nothing, so code that may not read a CT (the planner) can use the shape
model without pulling in the CT loader.
"""
