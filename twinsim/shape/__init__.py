"""Vertebral statistical shape models: training data, building, annotations, fitting, quality.

Modules: ``sources`` (raw training surfaces), ``build`` (correspondence, Procrustes, PCA),
``annotations`` (landmarks and transpedicular paths from geometry), ``model`` (file format,
instances), ``differentiable`` (the model as a torch function), ``surface_fit`` (fit to a
surface), ``quality`` (compactness, generalization, specificity), ``regions`` (which model a
level takes), ``held_out`` (the example CT stays out of every training set), ``commands``
(``twinsim ssm``). Importing the package loads nothing.
"""
