//! Interactive cards (card JSON 1.0, shared so they can be updated with `PATCH`): the
//! reply card that streamed text fills, and the approval card with Approve / Deny
//! buttons whose values carry the approval id, later showing the decision and who made it.

use sable_store::ApprovalRecord;
use serde_json::{Value, json};

/// What a button press asks for, as its `value` carries it.
pub(crate) const APPROVE: &str = "approve";
pub(crate) const DENY: &str = "deny";

/// Longest tool-argument text shown on an approval card, in characters.
const MAX_ARGUMENT_CHARS: usize = 1_500;

fn card(header: Option<(&str, &str)>, elements: Vec<Value>) -> Value {
    let mut card = json!({
        "config": {"wide_screen_mode": true, "update_multi": true},
        "elements": elements,
    });
    if let Some((title, template)) = header {
        card["header"] = json!({
            "title": {"tag": "plain_text", "content": title},
            "template": template,
        });
    }
    card
}

fn markdown(text: &str) -> Value {
    json!({"tag": "markdown", "content": text})
}

/// A reply card: the text so far while `streaming`, the final text otherwise.
pub(crate) fn reply(text: &str, streaming: bool) -> Value {
    let shown = if text.trim().is_empty() { "…" } else { text };
    let mut elements = vec![markdown(shown)];
    if streaming {
        elements.push(json!({
            "tag": "note",
            "elements": [{"tag": "plain_text", "content": "Writing…"}],
        }));
    }
    card(None, elements)
}

/// The card asking for a decision on `approval`.
pub(crate) fn approval_pending(approval: &ApprovalRecord) -> Value {
    let button = |label: &str, kind: &str, decision: &str| {
        json!({
            "tag": "button",
            "text": {"tag": "plain_text", "content": label},
            "type": kind,
            "value": {"approval_id": approval.id.to_string(), "decision": decision},
        })
    };
    card(
        Some(("Approval needed", "orange")),
        vec![
            markdown(&call_summary(approval)),
            json!({
                "tag": "action",
                "actions": [button("Approve", "primary", APPROVE), button("Deny", "danger", DENY)],
            }),
        ],
    )
}

/// The card of a decided approval: the decision, who made it, and `note` (e.g. that a
/// later press changed nothing). No buttons.
pub(crate) fn approval_decided(approval: &ApprovalRecord, note: Option<&str>) -> Value {
    let (title, template) = match approval.status.as_str() {
        "approved" => ("Approved", "green"),
        "denied" => ("Denied", "red"),
        "expired" => ("Expired", "grey"),
        _ => ("Approval needed", "orange"),
    };
    let who = match approval
        .decided_by
        .as_deref()
        .and_then(|who| who.strip_prefix("feishu:"))
    {
        Some(open_id) => format!("<at id={open_id}></at> ({open_id})"),
        None => match approval.decided_by.as_deref() {
            Some(other) => other.to_owned(),
            None if approval.status == "expired" => "nobody in time".to_owned(),
            None => "the API".to_owned(),
        },
    };
    let mut elements = vec![
        markdown(&call_summary(approval)),
        markdown(&format!("**{title}** by {who}")),
    ];
    if let Some(note) = note {
        elements.push(json!({
            "tag": "note",
            "elements": [{"tag": "plain_text", "content": note}],
        }));
    }
    card(Some((title, template)), elements)
}

fn call_summary(approval: &ApprovalRecord) -> String {
    let mut arguments: String = approval
        .arguments
        .chars()
        .take(MAX_ARGUMENT_CHARS)
        .collect();
    if arguments.len() < approval.arguments.len() {
        arguments.push('…');
    }
    let arguments = arguments.replace("```", "'''");
    format!(
        "The agent wants to call **{}** with:\n```json\n{arguments}\n```",
        approval.tool
    )
}
