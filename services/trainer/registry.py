"""This trainer's entry in the Redis registry: joins it, renews it with a heartbeat (re-measuring the hardware,
whose free memory changes), marks it draining on shutdown and leaves it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.common.records import TrainerRecord
from services.common.redis_store import RunStore

log = logging.getLogger(__name__)


@dataclass
class Identity:
    """Who this trainer is in the registry (known once the server has bound its port)."""

    trainer_id: str
    address: str
    hardware: dict[str, Any] = field(default_factory=dict)
    # Re-measures the hardware (free memory changes); called with every heartbeat.
    probe_hardware: Callable[[], dict[str, Any]] | None = None


class Registration:
    """The registry entry and its heartbeat thread. `on_beat` runs after each renewal (the trainer's
    housekeeping of its runs); its failures are logged and the heartbeat goes on."""

    def __init__(
        self,
        store: RunStore,
        record: TrainerRecord,
        ttl_seconds: float,
        interval_seconds: float,
        probe_hardware: Callable[[], dict[str, Any]] | None = None,
        on_beat: Callable[[], None] = lambda: None,
    ):
        self.store = store
        self.record = record
        self.ttl = ttl_seconds
        self.interval = interval_seconds
        self._probe_hardware = probe_hardware
        self._on_beat = on_beat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self) -> None:
        """Create or renew the entry now."""
        self.store.register_trainer(self.record, self.ttl)

    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._thread.start()
        log.info(
            "registered",
            extra={"trainer_id": self.record.id, "address": self.record.address, "slots": self.record.slots},
        )

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self._probe_hardware:
                    self.record.hardware = self._probe_hardware()
                self.publish()
                self._on_beat()
            except Exception as exc:
                log.warning("heartbeat failed", extra={"error": str(exc)})

    def drain(self) -> None:
        """Still alive (heartbeats go on while runs checkpoint), but nothing new is placed here."""
        self.record.draining = True
        self.publish()

    def leave(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=self.interval + 5)
        self.store.unregister_trainer(self.record.id)

    def info(self) -> TrainerRecord:
        found = self.store.list_trainers([self.record.id])
        if found:
            self.record.run_ids, self.record.extra_slots = found[0].run_ids, found[0].extra_slots
        else:
            self.record.run_ids = sorted(self.store.trainer_slot_runs(self.record.id))
        return self.record
