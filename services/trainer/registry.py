"""This trainer's entry in the Redis registry: joins it, renews it with a heartbeat (re-measuring the hardware,
whose free memory changes), marks it draining on shutdown and leaves it; and a watchdog for the lease the
entry is: once no heartbeat has succeeded for the TTL, the gateway takes this trainer's runs for lost."""

from __future__ import annotations

import logging
import threading
import time
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
    housekeeping of its runs); its failures are logged and the heartbeat goes on.

    `on_lease_lost(seconds)` runs once when no renewal has succeeded for the TTL (the entry has expired, so
    the gateway may be resuming this trainer's runs elsewhere), from its own thread: the heartbeat thread
    may be the one stuck, in a Redis call on a dead link (the client has no socket timeout, which the
    blocking reads elsewhere need). It runs again only after a renewal succeeded in between."""

    def __init__(
        self,
        store: RunStore,
        record: TrainerRecord,
        ttl_seconds: float,
        interval_seconds: float,
        probe_hardware: Callable[[], dict[str, Any]] | None = None,
        on_beat: Callable[[], None] = lambda: None,
        on_lease_lost: Callable[[float], None] = lambda seconds: None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.store = store
        self.record = record
        self.ttl = ttl_seconds
        self.interval = interval_seconds
        self._probe_hardware = probe_hardware
        self._on_beat = on_beat
        self._on_lease_lost = on_lease_lost
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._renewed = clock()  # when the last renewal was sent (it succeeded)
        self._lease_lost = False

    def publish(self) -> None:
        """Create or renew the entry now."""
        sent = self._clock()
        self.store.register_trainer(self.record, self.ttl)
        # The entry expires TTL after the server applied the renewal, which is after `sent`.
        self._renewed = sent
        if self._lease_lost:
            self._lease_lost = False
            log.warning(
                "registry entry renewed after the lease was lost", extra={"trainer_id": self.record.id}
            )

    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(target=self._watch_lease, name="lease-watchdog", daemon=True)
        self._watchdog.start()
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

    def lease_age(self) -> float:
        """Seconds since the last renewal that succeeded was sent."""
        return self._clock() - self._renewed

    def check_lease(self) -> bool:
        """Call on_lease_lost once the lease has run out; True when it did now."""
        age = self.lease_age()
        if age < self.ttl or self._lease_lost:
            return False
        self._lease_lost = True
        log.error(
            "no heartbeat succeeded for the registry TTL: this trainer's runs are taken for lost",
            extra={"trainer_id": self.record.id, "seconds": round(age, 1), "ttl_s": self.ttl},
        )
        try:
            self._on_lease_lost(age)
        except Exception:
            log.exception("stopping the runs of a lost lease failed")
        return True

    def _watch_lease(self) -> None:
        while not self._stop.wait(min(self.interval, self.ttl / 4)):
            self.check_lease()

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
