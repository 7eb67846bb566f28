"""The shipped toy-world tables written as a rules file, so `bench quality --rules` judges them like a calibration.

    python bench/e2e/shipped_rules_file.py CALIBRATED.yaml OUT.yaml

Takes the signature and generation settings of a calibrated toy-world rules file (20 steps, shift 1)
and the shipped tables of the default embedder (`core.tables`, USE multilingual).
"""

import sys

from flexcache.core.tables import USE_PART_SIMILARITY_TABLE, USE_REGION_TABLE, USE_SIMILARITY_TABLE
from flexcache.quality.rules import load_rules, save_rules

calibrated = load_rules(sys.argv[1])
shipped = calibrated.replace(similarity_table=USE_SIMILARITY_TABLE, part_table=USE_PART_SIMILARITY_TABLE,
                             region_table=USE_REGION_TABLE, region_method="restart",
                             report={"settings": calibrated.report["settings"], "shipped": True})
print(save_rules(shipped, sys.argv[2]))
