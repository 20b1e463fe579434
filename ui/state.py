"""Session-state keys and page paths, in one place so the pages agree on them."""

from __future__ import annotations

# Pages (paths relative to ui/app.py; st.switch_page takes them as they are).
PAGE_HOME = "app_pages/home.py"
PAGE_NEW_RUN = "app_pages/new_run.py"
PAGE_RUN = "app_pages/run.py"
PAGE_COMPARE = "app_pages/compare.py"
PAGE_STUDY = "app_pages/study.py"
PAGE_PLAYGROUND = "app_pages/playground.py"

# What the pages show, carried between them.
RUN_ID = "run_id"  # the run the Run page shows
RUN_FEEDS = "run_feeds"  # run id -> feed.RunFeed: the events read so far
COMPARISON_ID = "comparison_id"  # the comparison the Compare page shows
STUDY_ID = "study_id"  # the study the Study page shows
PROBE_RUN_ID = "probe_run_id"  # the New run page's rank probe
RANK_ADVICE = "rank_advice"  # probe run id -> RecommendRankResponse
UPLOAD_RESULT = "upload_result"  # the last CreateDatasetResponse of the New run page
EVALUATIONS = "evaluations"  # run id -> list of EvaluateResponse
ADAPTER_ZIPS = "adapter_zips"  # (run id, artifact) -> zip bytes ready to download
GENERATIONS = "generations"  # (base text, adapter text) of the last Playground prompt
FLASH = "flash"  # one message to show at the top of the next page (e.g. "run started")

# Widgets whose values other code reads or sets.
NEW_RUN_MODEL = "new_run.model"
NEW_RUN_MODEL_OTHER = "new_run.model_other"
NEW_RUN_DATASET = "new_run.dataset"
NEW_RUN_METHOD = "new_run.method"
NEW_RUN_ITERS = "new_run.iters"
NEW_RUN_RANK = "new_run.rank"
NEW_RUN_RANK_AUTO = "new_run.rank_auto"
NEW_RUN_BATCH = "new_run.batch_size"
NEW_RUN_BATCH_AUTO = "new_run.batch_auto"
NEW_RUN_NAME = "new_run.name"
RUN_SELECT = "run.select"
COMPARE_SELECT = "compare.select"
STUDY_SELECT = "study.select"
PLAYGROUND_RUN = "playground.run"
PLAYGROUND_PROMPT = "playground.prompt"
