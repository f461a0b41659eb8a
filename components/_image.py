"""The one container image every step runs in, chosen when the pipeline is compiled.

Set ``SPARSE_TRANSFER_IMAGE`` before ``sparse-transfer pipeline compile`` (the
Helm chart does the same through its ``image`` values) to point the compiled
specs at your registry; the default is the project's published image.
"""

from __future__ import annotations

import os

DEFAULT_IMAGE = "ghcr.io/sparse-transfer/sparse-transfer:0.1.0"
IMAGE = os.environ.get("SPARSE_TRANSFER_IMAGE", DEFAULT_IMAGE)

# The image already holds kfp and the project: no pip install when a step starts.
COMPONENT_OPTIONS = {"base_image": IMAGE, "install_kfp_package": False}
