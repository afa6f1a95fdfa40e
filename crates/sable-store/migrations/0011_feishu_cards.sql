-- Streaming replies and approval cards in Feishu chats (issue 16): whether an app's
-- replies stream into a card, who decided an approval, and the cards the bot posted.
ALTER TABLE feishu_apps ADD COLUMN stream_replies boolean NOT NULL DEFAULT true;

-- Who decided: 'feishu:<open_id>' for a card press; null for API decisions and expiry.
ALTER TABLE approvals ADD COLUMN decided_by text;

-- One row per card slot, claimed (inserted once) before Feishu is called, so one gateway
-- replica creates the card: 'reply:<turn_id>' (kind 'card' when a streamed card took the
-- reply, 'post' when the final reply went out without one) or 'approval:<approval_id>'.
-- message_id is the card's Feishu message once created; final is set when the final
-- reply text was written to the card (streamed updates stop at it).
CREATE TABLE feishu_cards (
    card_key    text PRIMARY KEY,
    org_id      uuid NOT NULL,
    turn_id     uuid NOT NULL,
    app_id      text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('card', 'post')),
    message_id  text,
    final       boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
