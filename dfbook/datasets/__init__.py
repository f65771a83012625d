"""Real datasets read from their published layouts into the shared manifest (``dfbook.manifest``).

Each adapter takes ``root`` (default ``$DFBOOK_DATA/<name>``, see ``dfbook.paths.data_dir``) and
raises :class:`DatasetError` naming the missing folder or file and pointing to ``data/README.md``,
which says where to obtain each dataset, its licence and its expected layout.

========================  ======================  =============================================
adapter                   default folder          rows
========================  ======================  =============================================
``ffpp``                  ``ffpp``                videos (``frame=-1``): run ``dfbook prepare``
``celebdf``               ``celebdf_v1|v2``       videos
``uadfv``                 ``uadfv``               videos
``wilddeepfake``          ``wilddeepfake``        face frames
``video_folder``          (any)                   videos/images under ``real/`` and ``fake/``
``cnndetection``          ``cnndetection``        images (train/val/test)
``univfd_diffusion``      ``univfd_diffusion``    images (test)
``generator_folders``     ``generators``          images with generator family labels
``aiface``                ``aiface``              images with demographic columns
``multiffdi``             ``multiffdi``           images (phase-1 train/val)
``deepfakebench``         ``deepfakebench``       face frames of DeepfakeBench's preprocessing
========================  ======================  =============================================
"""

from dfbook.datasets._layout import DatasetError
from dfbook.datasets.deepfakebench import deepfakebench
from dfbook.datasets.faces import VIDEO, celebdf, ffpp, uadfv, video_folder, wilddeepfake
from dfbook.datasets.generated import (GENERATOR_FAMILY, UNIVFD_REAL_SOURCE, cnndetection, family_of,
                                       generator_folders, univfd_diffusion)
from dfbook.datasets.labelled import aiface, multiffdi

__all__ = ["DatasetError", "VIDEO", "GENERATOR_FAMILY", "UNIVFD_REAL_SOURCE", "aiface", "celebdf",
           "cnndetection", "deepfakebench", "family_of", "ffpp", "generator_folders", "multiffdi", "uadfv",
           "univfd_diffusion", "video_folder", "wilddeepfake"]
