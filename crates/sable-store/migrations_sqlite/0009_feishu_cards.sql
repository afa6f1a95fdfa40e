-- Streaming replies and approval cards in Feishu chats (issue 16): whether an app's
-- replies stream into a card, who decided an approval, and the cards the bot posted
-- (see the Postgres migration 0011 for the meaning of each column).
ALTER TABLE feishu_apps ADD COLUMN stream_replies INTEGER NOT NULL DEFAULT 1;

ALTER TABLE approvals ADD COLUMN decided_by TEXT;

CREATE TABLE feishu_cards (
    card_key    TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL,
    turn_id     TEXT NOT NULL,
    app_id      TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('card', 'post')),
    message_id  TEXT,
    final       INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL
) STRICT;
