"""Task runner: a long task on a thread of its own, shown on the session monitor's dashboard.

Run the monitor (``session-monitor serve``), then::

    panel serve examples/task_runner.py

Each session is tracked; "Run task" marks it ``running`` with the task's name while the task works,
"Cancel" stops the task after its current step, and a kill from the dashboard (or ``session-monitor
kill``) stops it too and tells the user why.

Panel clears this script's globals when a session ends, and the task's thread may still be finishing
a step then: what runs on that thread, and what ``on_kill`` runs, uses only its arguments and objects
it was given (bound methods), never this script's global names.
"""

import threading
from functools import partial

import panel as pn

from session_monitor import SessionClient

APP_NAME = "task_runner"

pn.extension(notifications=True)


class TaskView:
    """The page, and the only things the task's thread and ``on_kill`` touch (through ``self``)."""

    def __init__(self, session_id: str) -> None:
        self.steps = pn.widgets.IntSlider(name="Steps", start=1, end=60, value=20)
        self.step_s = pn.widgets.FloatSlider(name="Seconds per step", start=0.1, end=5.0, step=0.1, value=0.5)
        self.run = pn.widgets.Button(name="Run task", button_type="primary")
        self.cancel = pn.widgets.Button(name="Cancel", button_type="warning", disabled=True)
        self.progress = pn.indicators.Progress(name="Progress", value=0, max=100, width=420)
        self.status = pn.pane.Markdown("Idle.", name="status")
        self.session = pn.pane.Str(f"session {session_id}", styles={"color": "#666"})
        self.stop = threading.Event()
        self.stopped_because: str | None = None
        """Why the task was stopped from outside (a kill); ``None`` for the Cancel button."""

    def layout(self) -> pn.viewable.Viewable:
        return pn.Column(
            "# Task runner",
            "A long task on a thread, tracked by the session monitor. Kill this session from the dashboard to "
            "see the task stop and the reason shown here.",
            pn.Row(self.steps, self.step_s),
            pn.Row(self.run, self.cancel),
            self.progress,
            self.status,
            self.session,
        )

    def show(self, done: int, total: int, message: str, running: bool) -> None:
        self.progress.value = int(100 * done / total) if total else 0
        self.status.object = message
        self.run.disabled = running
        self.cancel.disabled = not running

    def stopped_by_monitor(self, tracker: SessionClient) -> None:
        """``on_kill``: the session was killed or ended; stop the task and say why."""
        if not tracker.ended:  # a kill runs on_kill before the session ends; a closed tab, after
            reason = tracker.kill_reason or "no reason given"
            self.stopped_because = f"**Stopped: this session was ended by an administrator** ({reason})."
            self.status.object = self.stopped_because
        self.stop.set()


def run_task(app_name: str, name: str, steps: int, step_s: float, view: TaskView) -> None:
    """The task, on its own thread: one ``tracker.task`` around all of it, the stop event checked every step.

    ``get_tracker`` here, on a thread the button's callback started, finds the session that started it.
    """
    import time

    from session_monitor import SessionClient

    tracker = SessionClient.get_tracker(app_name=app_name)
    with tracker.task(name):
        for step in range(1, steps + 1):
            if view.stop.wait(step_s):
                message = view.stopped_because or f"Cancelled after {step - 1} of {steps} steps."
                view.show(step - 1, steps, message, running=False)
                return
            view.show(step, steps, f"Step {step} of {steps} done.", running=step < steps)
    view.show(steps, steps, f"Done: {steps} steps (finished at {time.strftime('%H:%M:%S')}).", running=False)


tracker = SessionClient.get_tracker(app_name=APP_NAME)
view = TaskView(tracker.session_id)
tracker.on_kill(partial(TaskView.stopped_by_monitor, view, tracker))


def on_run(_event: object) -> None:
    view.stop.clear()
    view.show(0, view.steps.value, "Starting…", running=True)
    name = f"{view.steps.value} steps of {view.step_s.value:g} s"
    thread = threading.Thread(
        target=run_task, args=(APP_NAME, name, view.steps.value, view.step_s.value, view), daemon=True
    )
    thread.start()


view.run.on_click(on_run)
view.cancel.on_click(lambda _event: view.stop.set())
view.layout().servable(title="Task runner")
