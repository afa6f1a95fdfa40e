-- One deployment-wide count of the changes that a cached key or org configuration must
-- not outlive: a key revoked or deleted, its role, expiry, org, secret or name changed,
-- an org's configuration version raised or the org deleted. Triggers count them in the
-- changing transaction, so the count rises exactly when such a change commits, whatever
-- path made it (the API, `sable admin`, an operator's psql). Gateways poll the count once
-- a second: unchanged, what they read before still holds (the key cache, intake's org
-- configuration); changed, they read again (docs/ARCHITECTURE.md, "The change count").
CREATE TABLE change_count (
    id      integer PRIMARY KEY CHECK (id = 1),
    changes bigint NOT NULL
);
INSERT INTO change_count (id, changes) VALUES (1, 0);
GRANT SELECT, UPDATE ON change_count TO sable_app;

CREATE FUNCTION count_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE change_count SET changes = changes + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

-- Every column a key's authentication reads, except its last use (written each minute).
CREATE TRIGGER api_keys_count_change AFTER UPDATE ON api_keys FOR EACH ROW
    WHEN ((OLD.org_id, OLD.prefix, OLD.secret_hash, OLD.revoked_at, OLD.role, OLD.expires_at, OLD.name)
          IS DISTINCT FROM
          (NEW.org_id, NEW.prefix, NEW.secret_hash, NEW.revoked_at, NEW.role, NEW.expires_at, NEW.name))
    EXECUTE FUNCTION count_change();
CREATE TRIGGER api_keys_count_delete AFTER DELETE ON api_keys FOR EACH ROW
    EXECUTE FUNCTION count_change();
CREATE TRIGGER orgs_count_change AFTER UPDATE ON orgs FOR EACH ROW
    WHEN (OLD.config_version IS DISTINCT FROM NEW.config_version)
    EXECUTE FUNCTION count_change();
CREATE TRIGGER orgs_count_delete AFTER DELETE ON orgs FOR EACH ROW
    EXECUTE FUNCTION count_change();
