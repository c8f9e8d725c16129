"""One dialogue step with persistence: state and request are stored together or not at all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from types import EllipsisType

from flows import (
    Flow,
    Lang,
    Reply,
    RequestDraft,
    Restart,
    SaveRequest,
    State,
    fresh_start,
    new_state,
    step,
)
from flows import Input as EngineInput
from storage import (
    AsyncSession,
    DialogueSession,
    RequestCreate,
    create_request,
    get_dialogue,
    save_dialogue,
)

__all__ = ["Pinned", "StepResult", "advance", "load_state", "store_request"]


@dataclass(frozen=True)
class StepResult:
    """What one input did: the new state, the replies to show and the saved request id."""

    state: State
    replies: tuple[Reply, ...]
    request_id: int | None = None
    #: The flow version the step ran on (the dialogue's own, which may not be the active one).
    flow: Flow | None = None
    duplicate: bool = False
    restarted: bool = False


Pinned = Callable[[str], Awaitable[Flow | None]]


async def load_state(
    *,
    session: AsyncSession,
    flow: Flow,
    client_id: int,
    lang: Lang,
    pinned: Pinned | None = None,
    stored: DialogueSession | None | EllipsisType = ...,
) -> tuple[State, Flow, int | None, bool]:
    """Return (state, the flow it runs on, last update id, restarted) for a client.

    A dialogue under way stays on the flow version it started with (``pinned`` finds it);
    one whose version is unknown starts over on ``flow`` (keeping its red flags unless it
    had ended). ``stored`` is the client's dialogue row if the caller has read it already.
    """
    if stored is ...:
        stored = await get_dialogue(session=session, client_id=client_id)
    if stored is None:
        return new_state(flow, lang), flow, None, False
    state = State.model_validate(stored.state)
    if state.flow == flow.name and state.version == flow.version:
        return state, flow, stored.last_update_id, False
    older = await pinned(state.version) if pinned is not None else None
    if older is not None and older.name == state.flow:
        return state, older, stored.last_update_id, False
    fresh = fresh_start(flow, state)
    # Buttons drawn on the lost version are stale on the new dialogue.
    fresh = fresh.model_copy(update={"seq": state.seq + 1})
    return fresh, flow, stored.last_update_id, True


async def store_request(
    *,
    session: AsyncSession,
    client_id: int,
    draft: RequestDraft,
    source: str | None = None,
    at: datetime | None = None,
) -> int:
    """Insert the consultation request a finished dialogue produced; return its id."""
    if draft.outcome is None:  # the checker proves every saving path has an outcome
        raise ValueError(f"flow {draft.flow} saved a request without an outcome")
    made = RequestCreate(
        client_id=client_id,
        flow_name=draft.flow,
        flow_version=draft.version,
        language=draft.lang,
        outcome=draft.outcome,
        rule_ids=list(draft.rule_ids),
        reasons=list(draft.reasons),
        answers=[
            {"node": a.node, "question": a.question, "answer": a.answer} for a in draft.answers
        ],
        facts=draft.facts,
        name=draft.fields.get("name"),
        phone=draft.fields.get("phone"),
        preferred_time=draft.fields.get("call_time"),
        red_flag_changed=draft.red_flag_changed,
        withdrawn_red_flags=list(draft.withdrawn_red_flags),
        source=source,
    )
    request = await create_request(session=session, request=made, created_at=at)
    assert request.id is not None
    return request.id


async def advance(
    *,
    session: AsyncSession,
    flow: Flow,
    client_id: int,
    inp: EngineInput,
    lang: Lang,
    update_id: int | None = None,
    source: str | None = None,
    at: datetime | None = None,
    pinned: Pinned | None = None,
    stored: DialogueSession | None | EllipsisType = ...,
) -> StepResult:
    """Step a client's dialogue and persist the result in the caller's open transaction.

    With ``update_id``, an update already processed (id not above the stored one) changes
    nothing and is reported as a duplicate. ``stored``: the client's dialogue row, if the
    caller has read it already in this transaction (one read per step).
    """
    if stored is ...:
        stored = await get_dialogue(session=session, client_id=client_id)
    state, runs_on, last_update_id, restarted = await load_state(
        session=session, flow=flow, client_id=client_id, lang=lang, pinned=pinned, stored=stored
    )
    if update_id is not None and last_update_id is not None and update_id <= last_update_id:
        return StepResult(state, (), flow=runs_on, duplicate=True)
    if runs_on is not flow and (isinstance(inp, Restart) or state.finished):
        # A new dialogue always starts on the active version; an ended one leaves no red flags.
        state, runs_on = fresh_start(flow, state), flow
    state, replies = step(runs_on, state, inp)
    request_id = None
    for reply in replies:
        if isinstance(reply, SaveRequest):
            request_id = await store_request(
                session=session, client_id=client_id, draft=reply.request, source=source, at=at
            )
    await save_dialogue(
        session=session,
        client_id=client_id,
        flow_name=state.flow,
        flow_version=state.version,
        state=state.model_dump(mode="json"),
        last_update_id=update_id,
        stored=stored,
    )
    return StepResult(state, replies, request_id, flow=runs_on, restarted=restarted)
