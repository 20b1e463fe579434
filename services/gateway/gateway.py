"""The gateway's core: checks every request, records runs in Redis, has them placed, cancels and resumes
them, and picks the trainer that serves a Generate or Evaluate call. The servicer wraps it in gRPC."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from services.common.identity import ANONYMOUS, CALLER_KEY, ApiTokens, Principal, may_change
from services.common.logs import run_context
from services.common.model_config import read_model_config
from services.common.records import RunRecord, TrainerRecord, now_ms
from services.common.redis_store import RunStore
from services.common.spec import RunSpec
from services.common.status_machine import ACTIVE, RESUMABLE, TERMINAL
from services.common.validation import (
    HUB_PREFIX,
    Roots,
    check_id,
    check_labels,
    check_name,
    check_range,
    check_spec,
    confine,
    dataset_dir,
    model_dir,
    new_id,
    overlay_spec,
)
from services.gateway import catalog, preflight
from services.gateway.config import GatewayConfig
from services.gateway.placement import DEVICES, Placer
from services.gateway.trainers import TrainerClients

log = logging.getLogger(__name__)


def check_placement(placement: dict[str, Any]) -> dict[str, Any]:
    device = placement.get("device", "")
    if device not in DEVICES:
        raise InvalidArgument(
            f"must be one of {', '.join(repr(d) for d in DEVICES)}; got {device!r}", "placement.device"
        )
    if placement.get("trainer_id"):
        check_id(placement["trainer_id"], "placement.trainer_id")
    return {k: v for k, v in placement.items() if v}


class Gateway:
    def __init__(self, config: GatewayConfig, store: RunStore, trainers: TrainerClients):
        self.config = config
        self.store = store
        self.trainers = trainers
        self.roots = Roots.from_paths(config.models_root, config.data_root, config.runs_root)
        self.users = ApiTokens.from_settings(config.api_token, config.api_tokens_file)
        self._uploads = threading.Lock()
        self.placer = Placer(
            store,
            trainers.dispatch,
            interval=config.placement_interval,
            auto_resume=config.auto_resume,
            max_auto_resumes=config.max_auto_resumes,
        )

    def start(self) -> None:
        self.placer.start()
        threading.Thread(target=catalog.warm_tokenizer_imports, name="warm-tokenizers", daemon=True).start()

    def shutdown(self) -> None:
        self.placer.stop()

    # ---- runs ----

    def submit(
        self,
        spec: RunSpec,
        name: str = "",
        placement: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        experiment_id: str = "",
        owner: str = ANONYMOUS,
    ) -> RunRecord:
        """Record a run for `owner` (caller_of: the signed-in user, or the user the comparator submits an
        experiment's run for) and have it placed."""
        # Here: its paths; the trainer checks them again against its own roots.
        resolved = check_spec(spec, self.roots)
        check_name(name)
        labels = check_labels(labels or {})
        placement = check_placement(placement or {})
        if experiment_id:
            check_id(experiment_id, "experiment_id")
        peaks = self.check_runnable(resolved, placement)
        record = RunRecord(
            id=new_id("r"),
            spec=spec.given(),
            name=name,
            labels=labels,
            placement=placement,
            experiment_id=experiment_id,
            predicted_peak_bytes=peaks,  # the placer keeps the run off trainers too small for it
            owner=owner,
        )
        with run_context(record.id):
            self.store.create_run(record)
            log.info("run submitted")
            self.placer.place_now()
        return self.store.get_run(record.id)

    def cancel(self, run_id: str, reason: str = "", caller: str = ANONYMOUS) -> RunRecord:
        check_id(run_id, "run_id")
        check_name(reason, "reason")
        record = self.store.get_run(run_id)
        self._check_owner(record, caller, "cancel")
        if record.status in TERMINAL:
            raise FailedPrecondition(f"run {run_id} already {record.status}", "run_id")
        on_trainer = record.status in ACTIVE and record.trainer
        if on_trainer and self.store.trainer_alive(record.trainer):
            trainer = self.store.get_trainer(record.trainer)
            try:
                self.trainers.cancel(trainer.address, run_id, reason)
                return self.store.get_run(run_id)
            except Unavailable:
                log.warning("trainer unreachable; cancelling in Redis", extra={"trainer_id": record.trainer})
        # Nothing runs it (queued, lost, or its trainer is unreachable: its process sees the status and stops).
        self.store.transition(
            run_id,
            "CANCELLED",
            only_from=[record.status],
            release=True,
            queue="remove",
            set_fields={"finished_at": now_ms()},
            reason=reason or "cancel requested",
        )
        return self.store.get_run(run_id)

    def resume(self, run_id: str, caller: str = ANONYMOUS) -> RunRecord:
        check_id(run_id, "run_id")
        record = self.store.get_run(run_id)
        self._check_owner(record, caller, "resume")
        if record.status not in RESUMABLE:
            raise FailedPrecondition(
                f"run {run_id} is {record.status}; only FAILED, CANCELLED or LOST runs resume", "run_id"
            )
        with run_context(run_id):
            self.store.transition(
                run_id,
                "RESUMING",
                only_from=[record.status],
                release=True,
                queue="add",
                set_fields={"trainer": "", "previous_trainer": record.trainer or record.previous_trainer},
                delete=["error", "finished_at"],
                reason="resume requested",
            )
            self.placer.place_now()
        return self.store.get_run(run_id)

    @staticmethod
    def _check_owner(record: RunRecord, caller: str, verb: str) -> None:
        """Only a run's owner changes it; reading it (GetRun, WatchRun, its adapter, Generate) is open to
        every user of the lab. Checked before anything is written. The owner never changes after SubmitRun,
        so this read and the write that follows need no transaction."""
        if not may_change(record.owner, caller):
            raise PermissionDenied(
                f"run {record.id} belongs to user {record.owner!r}; only its owner can {verb} it "
                f"(you are {caller!r})",
                "run_id",
            )

    # ---- which trainer serves a call ----

    def trainer_for_run(self, run_id: str) -> TrainerRecord:
        """The live trainer that holds a finished run's adapter."""
        check_id(run_id, "run_id")
        record = self.store.get_run(run_id)
        if record.status not in ("SUCCEEDED", "CANCELLED"):
            raise FailedPrecondition(
                f"run {run_id} is {record.status}; only SUCCEEDED or CANCELLED runs have an adapter", "run_id"
            )
        holder = record.trainer or record.previous_trainer
        if not self.store.trainer_alive(holder):
            raise Unavailable(
                f"trainer {holder or '(none)'} that holds run {run_id}'s adapter is not running"
            )
        return self.store.get_trainer(holder)

    def any_trainer(self) -> TrainerRecord:
        """A live trainer for base-model generation, the least busy first."""
        trainers = [t for t in self.store.list_trainers() if not t.draining]
        if not trainers:
            raise Unavailable("no trainer is registered; start one (make run starts one)")
        return min(trainers, key=lambda t: (t.busy_slots - t.slots, t.id))

    def check_model(self, model: str, field: str = "model") -> Path:
        path = model_dir(model, self.roots, field)
        read_model_config(
            path, field
        )  # a broken config.json: FAILED_PRECONDITION here, not the trainer's INTERNAL
        return path

    # ---- models and datasets ----

    def list_models(self) -> list[catalog.ModelInfo]:
        return catalog.list_models(self.roots.models)

    def list_datasets(self) -> list[catalog.DatasetInfo]:
        return catalog.list_datasets(self.roots.data)

    def validate_dataset(
        self, path: str, max_problems: int, columns: dict[str, str] | None = None
    ) -> tuple[bool, catalog.DatasetInfo, list]:
        max_problems = int(check_range(max_problems or 50, 1, 1000, "max_problems"))
        directory = self._dataset(path)
        valid, problems = catalog.validate_dataset(directory, max_problems, columns)
        return valid, catalog.describe_dataset(directory), problems

    def preview_dataset(
        self, path: str, split: str, rows: int, model: str, columns: dict[str, str] | None = None
    ) -> tuple[list, int, str]:
        from services.common.errors import DatasetError

        split = split or "train"
        if split not in catalog.SPLITS:
            raise InvalidArgument(f"must be one of {', '.join(catalog.SPLITS)}, got {split!r}", "split")
        rows = int(check_range(rows or 5, 1, 100, "rows"))
        directory = self._dataset(path)
        if not catalog.has_split(directory, split):
            raise NotFound(f"dataset {path!r} has no {split} split ({split}.jsonl, .parquet, ...)", "split")
        model_path = self.check_model(model)
        try:
            out, total = catalog.preview_dataset(directory, split, rows, model_path, columns)
        except (DatasetError, ValueError) as exc:
            raise InvalidArgument(f"{exc}; ValidateDataset lists every problem", "path") from None
        return out, total, model_path.name

    def create_dataset(
        self, name: str, files: dict[str, bytes], max_problems: int, user: str = ANONYMOUS
    ) -> tuple[catalog.DatasetInfo | None, list]:
        check_id(name, "name")
        max_problems = int(check_range(max_problems or 50, 1, 1000, "max_problems"))
        for split in ("train", "valid"):
            if not files.get(split):
                raise InvalidArgument(f"{split}.jsonl is required and was empty", split)
        with self._uploads:  # the limit check and the write, one upload at a time
            self._check_upload_limits(user, sum(len(b) for b in files.values()))
            info, problems = catalog.create_dataset(self.roots.data, name, files, max_problems, user)
        if info is not None:
            log.info("dataset created", extra={"dataset": name, "user": user})
        return info, problems

    def _check_upload_limits(self, user: str, size: int) -> None:
        count, used = catalog.uploads_of(self.roots.data, user)
        limit = self.config.max_datasets_per_user
        if count >= limit:
            raise ResourceExhausted(
                f"user {user!r} has created {count} datasets, the limit (PEFTLAB_MAX_DATASETS_PER_USER="
                f"{limit}); remove one from the data root or raise the limit",
                "name",
            )
        limit = self.config.max_upload_bytes_per_user
        if used + size > limit:
            raise ResourceExhausted(
                f"user {user!r} has uploaded {used} bytes; this upload's {size} would pass the limit "
                f"(PEFTLAB_MAX_UPLOAD_BYTES_PER_USER={limit}); remove a dataset or raise the limit",
                "train",
            )

    # ---- who a call is for ----

    def caller_of(self, metadata: dict[str, str]) -> str:
        """The user a call is for: the bearer token's user, or the user a trusted service acts for (the
        interceptor admitted that call only with a valid grant); everyone is 'anonymous' without tokens."""
        if not self.users.enabled:
            return ANONYMOUS
        user = self.users.user_of(str(metadata.get("authorization", "")))
        return user or str(metadata.get(CALLER_KEY, ANONYMOUS))

    def principal_of(self, metadata: dict[str, str]) -> Principal:
        """The user and the grant with which the comparator may later act for them."""
        user = self.caller_of(metadata)
        return Principal(user, self.users.grant_for(user))

    # ---- a finished run's adapter, read from its dir ----

    def adapter_dir(self, run_id: str) -> Path:
        """The dir of a SUCCEEDED or CANCELLED run, which must lie under this gateway's runs root."""
        check_id(run_id, "run_id")
        record = self.store.get_run(run_id)
        if record.status not in ("SUCCEEDED", "CANCELLED"):
            raise FailedPrecondition(
                f"run {run_id} is {record.status}; only SUCCEEDED or CANCELLED runs have an adapter", "run_id"
            )
        run_dir = Path(record.run_dir) if record.run_dir else self.roots.runs / run_id
        root = self.roots.runs
        if run_dir != root and root not in Path(os.path.normpath(run_dir)).parents:
            raise FailedPrecondition(
                f"run {run_id}'s dir {run_dir} is not under this gateway's runs root {root} "
                "(its trainer is on another machine)",
                "run_id",
            )
        if not run_dir.is_dir():
            raise NotFound(f"run {run_id}'s dir {run_dir} does not exist", "run_id")
        return run_dir

    def _dataset(self, path: str) -> Path:
        if not path:
            raise InvalidArgument("must name a dataset dir (e.g. 'default')", "path")
        if path.startswith(HUB_PREFIX):  # a hub name is fetched by the trainer that trains on it, not here
            raise InvalidArgument(
                f"must be a dataset dir under the data root; hub datasets ({HUB_PREFIX}owner/name) are "
                "checked by the trainer that downloads them",
                "path",
            )
        confine(path, self.roots.data, "path")
        return dataset_dir(path, self.roots, "path")

    # ---- experiments: the gateway's own checks before forwarding ----

    def check_experiment_base(
        self, base: RunSpec, overrides: list[dict[str, Any]], field: str = "base"
    ) -> None:
        resolved = check_spec(base, self.roots, field)
        if not overrides:  # a study: its trials vary the base, so only the model dir is checked here
            read_model_config(Path(resolved.model), f"{field}.model")
        for i, override in enumerate(overrides):
            where = f"arms[{i}].overrides"
            self.check_runnable(check_spec(overlay_spec(base, override, where), self.roots, where), {}, where)

    def check_runnable(
        self, resolved: RunSpec, placement: dict[str, Any], field: str = "spec"
    ) -> dict[str, int]:
        """What would make the run fail at its start, checked before it is queued (preflight.py): the model
        dir, num_layers and target_modules, max_seq_length against the longest prompt, predicted memory.
        Returns the predicted peak bytes by memory kind (preflight.predict_peaks), for placement."""
        model = Path(resolved.model)
        data = resolved.data if resolved.data.startswith(HUB_PREFIX) else Path(resolved.data)
        config = preflight.check_model_fit(resolved, model, field)
        preflight.check_prompts_fit(resolved, model, data, field)
        peaks = preflight.predict_peaks(resolved, config)
        preflight.check_memory(resolved, peaks, self.store.list_trainers(), placement, field)
        return peaks
