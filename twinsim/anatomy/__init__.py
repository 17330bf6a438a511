"""Patient anatomy: CT and label loading, surface meshes, the patient model."""

from twinsim.anatomy.ct import CTVolume, PatientDataError, load_ct
from twinsim.anatomy.meshing import SurfaceMesh
from twinsim.anatomy.patient import Patient, build_patient

__all__ = ["CTVolume", "Patient", "PatientDataError", "SurfaceMesh", "build_patient", "load_ct"]
