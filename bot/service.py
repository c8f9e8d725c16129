"""One dialogue step with persistence: state and request are stored together or not at all."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flows import (
    Flow,
    Lang,
    Reply,
    RequestDraft,
    SaveRequest,
    State,
    new_state,
    step,
)
from flows import Input as EngineInput
from storage import AsyncSession, create_request, get_dialogue, save_dialogue

__all__ = ["StepResult", "advance", "load_state", "store_request"]


@dataclass(frozen=True)
class StepResult:
    """What one input did: the new state, the replies to show and the saved request id."""

    state: State
    replies: tuple[Reply, ...]
    request_id: int | None = None
    duplicate: bool = False
    restarted: bool = False


async def load_state(
    *, session: AsyncSession, flow: Flow, client_id: int, lang: Lang
) -> tuple[State, int | None, bool]:
    """Return (state, last update id, restarted) for a client; a new state if none is stored.

    A stored dialogue that runs on another flow version starts over, keeping its red flags.
    """
    stored = await get_dialogue(session=session, client_id=client_id)
    if stored is None:
        return new_state(flow, lang), None, False
    state = State.model_validate(stored.state)
    if state.flow != flow.name or state.version != flow.version:
        return new_state(flow, state.lang, red_flags=state.red_flags), stored.last_update_id, True
    return state, stored.last_update_id, False


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
    request = await create_request(
        session=session,
        client_id=client_id,
        flow_name=draft.flow,
        flow_version=draft.version,
        language=draft.lang,
        outcome=draft.outcome,
        rule_ids=draft.rule_ids,
        reasons=draft.reasons,
        answers=[
            {"node": a.node, "question": a.question, "answer": a.answer} for a in draft.answers
        ],
        facts=draft.facts,
        name=draft.fields.get("name"),
        phone=draft.fields.get("phone"),
        preferred_time=draft.fields.get("call_time"),
        red_flag_changed=draft.red_flag_changed,
        withdrawn_red_flags=draft.withdrawn_red_flags,
        source=source,
        created_at=at,
    )
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
) -> StepResult:
    """Step a client's dialogue and persist the result in the caller's open transaction.

    With ``update_id``, an update already processed (id not above the stored one) changes
    nothing and is reported as a duplicate.
    """
    state, last_update_id, restarted = await load_state(
        session=session, flow=flow, client_id=client_id, lang=lang
    )
    if update_id is not None and last_update_id is not None and update_id <= last_update_id:
        return StepResult(state, (), duplicate=True)
    state, replies = step(flow, state, inp)
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
    )
    return StepResult(state, replies, request_id, restarted=restarted)
