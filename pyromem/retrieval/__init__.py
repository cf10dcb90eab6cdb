"""The associative-retrieval benchmark of Annabi et al. (2022), §5 and App. E.4.

Memories of N stored patterns drawn from a test split, queries that are corrupted stored
patterns, success criteria (nearest pattern and threshold), the baseline readers of §5.2
(MCHN, GMM, an NTM-style content read, MemN2N), the methods of Tables 2-4 by name,
hyper-parameters chosen on a training split, tables over seeds and the capacity sweep.
"""

from pyromem.retrieval.capacity import CAPACITY_SIZES, capacity_sweep, save_capacity_plot
from pyromem.retrieval.corruptions import (
    NOISE_LEVELS,
    check_corruptions,
    corrupt,
    default_corruptions,
    parse_corruption,
)
from pyromem.retrieval.criteria import (
    Outcome,
    dot_product_winners,
    retrieval_success,
    rms_distance,
    select_threshold,
)
from pyromem.retrieval.methods import (
    DEFAULTS,
    LATENT_METHODS,
    METHODS,
    PER_CORRUPTION_METHODS,
    PIXEL_METHODS,
    Method,
    build_method,
)
from pyromem.retrieval.protocol import Rates, evaluate, sample_memory
from pyromem.retrieval.readers import (
    ContentReader,
    FixedPointReader,
    MemN2NReader,
    train_reader,
)
from pyromem.retrieval.selection import GRIDS, candidates, scale_unit, select_hyperparameters
from pyromem.retrieval.tables import (
    check_memory_size,
    fit_for_column,
    format_table,
    retrieval_table,
    space_calibration,
)

__all__ = [
    "CAPACITY_SIZES",
    "DEFAULTS",
    "GRIDS",
    "LATENT_METHODS",
    "METHODS",
    "NOISE_LEVELS",
    "PER_CORRUPTION_METHODS",
    "PIXEL_METHODS",
    "ContentReader",
    "FixedPointReader",
    "MemN2NReader",
    "Method",
    "Outcome",
    "dot_product_winners",
    "Rates",
    "build_method",
    "candidates",
    "capacity_sweep",
    "check_corruptions",
    "check_memory_size",
    "corrupt",
    "default_corruptions",
    "evaluate",
    "fit_for_column",
    "format_table",
    "parse_corruption",
    "retrieval_success",
    "retrieval_table",
    "rms_distance",
    "sample_memory",
    "save_capacity_plot",
    "scale_unit",
    "select_hyperparameters",
    "select_threshold",
    "space_calibration",
    "train_reader",
]
