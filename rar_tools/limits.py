"""Every bound and choice an operation accepts, in one place.

The request models (`requests.py`), the MCP tool schemas, the CLI flags, the checks in the pipeline
stages and the error messages all read these names; none spells a number or a mode list of its own.
Importing this module imports nothing else.
"""

from __future__ import annotations

import re
from typing import Literal

# -- names and labels ---------------------------------------------------------------------------
MEMORY_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?")
MAX_MEMORY_NAME_CHARS = 64
MAX_LABEL_CHARS = 200
MAX_ENTRY_ID_CHARS = 64

# -- inputs of one call ---------------------------------------------------------------------------
MAX_IMAGE_ARG_CHARS = 30_000_000  # an image argument: a path, base64 data or a URL
MAX_IMAGES_PER_ADD = 64
MAX_LABELS_PER_ADD = 1000
MAX_IDS_PER_REMOVE = 1000
MAX_IDS_REPORTED = 1000  # entry ids listed in one add result
MAX_LIST_LABELS = 10_000  # labels listed per memory
DEFAULT_LIST_LABELS = 100
MAX_CURSOR_CHARS = 600  # a label listing's page cursor

# -- retrieval, ranking, regions, detection -------------------------------------------------------
MAX_K = 50
DEFAULT_K = 5
MIN_CANDIDATES = 2
MAX_CANDIDATES = 50
MAX_EXEMPLAR_IMAGES = 8  # stored exemplar images shown to the ranker in one call
MAX_BOXES = 100
MAX_VIEWS = 5
MAX_QUERIES = 50  # detector text queries
MAX_DETECTIONS = 100
DEFAULT_DETECTIONS = 50

# -- the choices ----------------------------------------------------------------------------------
EntryKind = Literal["image", "text"]
RetrievalMode = Literal["auto", "image", "text"]
RankMode = Literal["score", "generate"]
RankerView = Literal["crop", "prompt"]
LabelScore = Literal["max", "sum-top3"]
Fallback = Literal["none", "partial", "full"]

ENTRY_KINDS: tuple[EntryKind, ...] = ("image", "text")
RANKER_VIEWS: tuple[RankerView, ...] = ("crop", "prompt")

# -- memory upkeep: archives, curation ------------------------------------------------------------
MAX_PATH_CHARS = 4096
MAX_CURATION_RESULTS = 1000
DEFAULT_CURATION_RESULTS = 100
DEFAULT_DUPLICATE_THRESHOLD = 0.98
DEFAULT_CONFLICT_SIMILARITY = 0.5
MAX_CURATION_EXEMPLARS = 50_000  # exact all-pairs similarities: about a minute at this size on 2 cores
# -- segmentation and region descriptions ---------------------------------------------------------
MAX_SEGMENT_LABELS = 100  # labels one segment call looks for (each costs a Grad-CAM pass and 3 encodings)
DEFAULT_DESCRIBE_VIEWS = 2  # the tight view and the DynRefer context view that differs most from it
MAX_ATTRIBUTES = 8  # attributes kept from one description
MAX_CAPTION_CHARS = 300

# -- the ranker: score normalisation and candidate orders ---------------------------------------------
ScoreNormalisation = Literal["sum", "mean", "first"]
MAX_RANK_PERMUTATIONS = MAX_CANDIDATES  # more cyclic shifts than candidates would repeat orders
