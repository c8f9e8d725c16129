"""Test factories: a scripted client that drives the pure engine the way a person would."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path

from flows import (
    Alert,
    Back,
    Begin,
    Choose,
    Confirm,
    Continue,
    Done,
    Flow,
    Input,
    Lang,
    Message,
    Reply,
    RequestDraft,
    Restart,
    Revise,
    SaveRequest,
    State,
    TextInput,
    Toggle,
    load_flow,
    new_state,
    shipped_flow_path,
    step,
)

INTAKE_PATH: Path = shipped_flow_path()

#: What a client with nothing special answers at each question.
DEFAULT_ANSWERS: dict[str, str | tuple[str, ...]] = {
    "welcome": "start",
    "emergency": ("none",),
    "conditions": ("none",),
    "sciatica_phase": "calm",
    "prescription": "yes",
    "acute": ("none",),
    "chronic": ("none",),
    "fracture": "no",
    "offer_call": "yes",
    "oils": "no",
    "oil_allergy": "none",
    "oil_scent": "base_only",
    "consent": "agree",
    "name": "Анна",
    "phone": "+7 912 345-67-89",
    "call_time": "any",
}


@cache
def intake_flow() -> Flow:
    """The shipped intake flow, loaded once per test run."""
    return load_flow(INTAKE_PATH)


class Client:
    """A scripted client: every call is one engine step; replies and state are kept."""

    def __init__(self, flow: Flow | None = None, lang: Lang = "en") -> None:
        self.flow = flow or intake_flow()
        self.state: State = new_state(self.flow, lang)
        self.replies: tuple[Reply, ...] = ()
        self.saved: list[RequestDraft] = []
        #: Every message text the client was shown, in order.
        self.transcript: list[str] = []
        self.send(Begin())

    # -- raw steps

    def send(self, inp: Input) -> tuple[Reply, ...]:
        """Step the engine with ``inp``; remember the replies and any saved request."""
        self.state, self.replies = step(self.flow, self.state, inp)
        self.saved += [r.request for r in self.replies if isinstance(r, SaveRequest)]
        self.transcript += [r.text for r in self.replies if isinstance(r, Message)]
        return self.replies

    def choose(self, option: str) -> tuple[Reply, ...]:
        return self.send(Choose(option, self.state.node, self.state.seq))

    def toggle(self, option: str) -> tuple[Reply, ...]:
        return self.send(Toggle(option, self.state.node, self.state.seq))

    def done(self) -> tuple[Reply, ...]:
        return self.send(Done(self.state.node, self.state.seq))

    def tick(self, *options: str) -> tuple[Reply, ...]:
        for option in options:
            self.toggle(option)
        return self.done()

    def type(self, text: str) -> tuple[Reply, ...]:
        return self.send(TextInput(text))

    def cont(self) -> tuple[Reply, ...]:
        return self.send(Continue(self.state.node, self.state.seq))

    def confirm(self) -> tuple[Reply, ...]:
        return self.send(Confirm(self.state.node, self.state.seq))

    def back(self) -> tuple[Reply, ...]:
        return self.send(Back(self.state.seq))

    def restart(self) -> tuple[Reply, ...]:
        return self.send(Restart(self.state.seq))

    def revise(self, target: str | None = None) -> tuple[Reply, ...]:
        return self.send(Revise(target, self.state.seq))

    # -- reading replies

    @property
    def node(self) -> str:
        return self.state.node

    @property
    def messages(self) -> list[Message]:
        return [r for r in self.replies if isinstance(r, Message)]

    @property
    def alerts(self) -> list[str]:
        return [r.text for r in self.replies if isinstance(r, Alert)]

    @property
    def text(self) -> str:
        """All message text of the last step."""
        return "\n".join(m.text for m in self.messages)

    @property
    def facts(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for entry in self.state.history:
            for key, values in entry.facts.items():
                out.setdefault(key, set()).update(values)
        return out

    @property
    def outcome(self) -> str | None:
        values = self.facts.get("outcome")
        return next(iter(values)) if values else None

    # -- whole conversations

    def answer(self, value: str | tuple[str, ...]) -> tuple[Reply, ...]:
        """Answer the current question with an option id, a tuple of ticks or a text."""
        kind = self.flow.nodes[self.node].kind
        if kind == "checklist":
            ticks = value if isinstance(value, tuple) else (value,)
            return self.tick(*ticks)
        if kind in ("choice", "yesno"):
            assert isinstance(value, str)
            return self.choose(value)
        if kind in ("text", "phone"):
            assert isinstance(value, str)
            return self.type(value)
        raise AssertionError(f"cannot answer a {kind} node")

    def run(
        self,
        answers: Mapping[str, str | tuple[str, ...]] | None = None,
        *,
        stop_at: str | None = None,
        max_steps: int = 80,
    ) -> Client:
        """Answer question after question (``answers`` over the defaults) until the end.

        With ``stop_at``, stop when that question is reached instead.
        """
        plan = {**DEFAULT_ANSWERS, **(answers or {})}
        for _ in range(max_steps):
            if self.state.finished or self.node == stop_at:
                return self
            kind = self.flow.nodes[self.node].kind
            if kind == "info":
                self.cont()
            elif kind == "confirm":
                self.confirm()
            else:
                assert self.node in plan, f"no answer planned for {self.node}"
                before = self.state
                self.answer(plan[self.node])
                assert self.state != before, f"answer {plan[self.node]!r} at {self.node} refused"
        raise AssertionError("the dialogue did not finish")
