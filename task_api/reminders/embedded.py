"""The embedded default's reminders: worker and beat as one thread of the one process."""

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from task_api.config import Settings
from task_api.reminders import delivery
from task_api.reminders.mail import Mailer, mailer_for

logger = logging.getLogger(__name__)

UNLIMITED = 1_000_000  # batches per sweep: each is claimed only once the one before has been sent


class InProcessReminders:
    """Sweeps every REMINDER_SWEEP_SECONDS and delivers what it claimed to the log (or to
    SMTP_URL when set), with the same claims as the Celery workers, so several processes on
    one SQLite file still send each reminder once."""

    def __init__(self, session_factory: sessionmaker[Session], settings: Settings) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.mailer: Mailer = mailer_for(settings)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reminders", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self.settings.reminder_sweep_seconds):
            try:
                for batch in delivery.claim_batches(self.session_factory, self.settings, most=UNLIMITED):
                    delivery.deliver(batch, self.session_factory, self.mailer, self.settings)
                    if self._stopped.is_set():  # what is left lapses and is claimed after a restart
                        break
            except Exception:
                logger.exception("the reminders' sweep failed; the next one tries again")
