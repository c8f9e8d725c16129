"""The dialogue core: flow files, the pure engine, the checker and the safety policy.

Nothing here does I/O beyond reading flow files; ``bot`` drives it through this surface.
"""

from flows.catalogue import CATALOGUE, COMMANDS, t
from flows.checker import CheckReport, check_flow, check_text
from flows.diff import diff_flows
from flows.engine import (
    Alert,
    AnswerRecord,
    Back,
    Begin,
    Button,
    Choose,
    Confirm,
    Continue,
    Done,
    Input,
    Message,
    Reply,
    RequestDraft,
    Restart,
    Revise,
    SaveRequest,
    SetLang,
    State,
    TextInput,
    Toggle,
    decode,
    fresh_start,
    is_question,
    new_state,
    step,
)
from flows.errors import FlowError, FlowMismatchError, Problem
from flows.graph import Graph, describe, to_mermaid
from flows.loader import checksum, content_key, load_flow_text, shipped_flow_path
from flows.markup import plain_text
from flows.paths import PathCount, format_table, path_table
from flows.policy import POLICY, SafetyPolicy
from flows.schema import LANGS, LEVELS, Flow, Lang, Level
from flows.simulate import Script, ScriptError, Transcript, load_script, simulate

__all__ = [
    "CATALOGUE",
    "COMMANDS",
    "t",
    "PathCount",
    "format_table",
    "path_table",
    "simulate",
    "load_script",
    "Transcript",
    "ScriptError",
    "Script",
    "Graph",
    "describe",
    "to_mermaid",
    "diff_flows",
    "check_text",
    "LANGS",
    "LEVELS",
    "POLICY",
    "Alert",
    "AnswerRecord",
    "Back",
    "Begin",
    "Button",
    "CheckReport",
    "Choose",
    "Confirm",
    "Continue",
    "Done",
    "Flow",
    "FlowError",
    "FlowMismatchError",
    "Input",
    "Lang",
    "Level",
    "Message",
    "Problem",
    "Reply",
    "RequestDraft",
    "Restart",
    "Revise",
    "SafetyPolicy",
    "SaveRequest",
    "SetLang",
    "State",
    "TextInput",
    "Toggle",
    "check_flow",
    "checksum",
    "content_key",
    "decode",
    "fresh_start",
    "is_question",
    "load_flow_text",
    "new_state",
    "plain_text",
    "shipped_flow_path",
    "step",
]
