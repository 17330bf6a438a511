"""Patient anatomy: CT and label loading, surface meshes, the patient model.

Import the submodule you need (``twinsim.anatomy.ct``, ``.patient``, ``.meshing``...): importing
the package itself loads nothing, so code that may not read a CT can use the meshes without
pulling in the CT loader. Vertebral shape models live in ``twinsim.shape``.
"""
