-- The count of changes a cached key or org configuration must not outlive (the Postgres
-- migration 0019 says why); counted by triggers in the changing transaction.
CREATE TABLE change_count (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    changes INTEGER NOT NULL
) STRICT;
INSERT INTO change_count (id, changes) VALUES (1, 0);

CREATE TRIGGER api_keys_count_change AFTER UPDATE ON api_keys FOR EACH ROW
    WHEN OLD.org_id IS NOT NEW.org_id OR OLD.prefix IS NOT NEW.prefix
      OR OLD.secret_hash IS NOT NEW.secret_hash OR OLD.revoked_at IS NOT NEW.revoked_at
      OR OLD.role IS NOT NEW.role OR OLD.expires_at IS NOT NEW.expires_at
      OR OLD.name IS NOT NEW.name
BEGIN
    UPDATE change_count SET changes = changes + 1 WHERE id = 1;
END;
CREATE TRIGGER api_keys_count_delete AFTER DELETE ON api_keys FOR EACH ROW
BEGIN
    UPDATE change_count SET changes = changes + 1 WHERE id = 1;
END;
CREATE TRIGGER orgs_count_change AFTER UPDATE ON orgs FOR EACH ROW
    WHEN OLD.config_version IS NOT NEW.config_version
BEGIN
    UPDATE change_count SET changes = changes + 1 WHERE id = 1;
END;
CREATE TRIGGER orgs_count_delete AFTER DELETE ON orgs FOR EACH ROW
BEGIN
    UPDATE change_count SET changes = changes + 1 WHERE id = 1;
END;
