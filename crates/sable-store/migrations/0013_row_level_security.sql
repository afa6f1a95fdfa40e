-- Row-level security: every tenant table shows a connection only the rows of the org its
-- transaction names (`SET LOCAL sable.org_id = '<org id>'`), none when it names none.
-- The application connects through the role `sable_app`, which these policies bind (the
-- table owner, who runs migrations, is not bound). Cross-org work (workers, sweepers, the
-- sealer, the admin CLI) says so explicitly with `sable.org_id = '*'`, which the store
-- sets for its system pool; API reads run in transactions scoped to the caller's org.
DO $$
BEGIN
    CREATE ROLE sable_app NOLOGIN;
EXCEPTION
    -- Roles are per cluster: another database (or a concurrent migration) made it.
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;
DO $$
BEGIN
    EXECUTE format('GRANT sable_app TO %I', current_user);
EXCEPTION
    WHEN duplicate_object OR unique_violation OR invalid_grant_operation THEN NULL;
END
$$;
GRANT USAGE ON SCHEMA public TO sable_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO sable_app;

-- The rows of the org the transaction names, or of every org when it says '*'.
CREATE FUNCTION sable_org_visible(row_org uuid) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE current_setting('sable.org_id', true)
        WHEN '*' THEN true
        WHEN '' THEN false
        ELSE row_org = current_setting('sable.org_id', true)::uuid
    END
$$;

DO $$
DECLARE
    tenant text;
BEGIN
    FOREACH tenant IN ARRAY ARRAY[
        'api_keys', 'sessions', 'turns', 'messages', 'deliveries', 'provider_calls',
        'tool_calls', 'approvals', 'memory_notes', 'cron_tasks', 'cron_runs', 'feishu_apps',
        'feishu_events', 'feishu_reply_targets', 'feishu_cards', 'audit_events', 'audit_chain',
        'audit_checkpoints'
    ] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', tenant);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I TO sable_app '
            'USING (sable_org_visible(org_id)) WITH CHECK (sable_org_visible(org_id))',
            tenant
        );
    END LOOP;
END
$$;
ALTER TABLE orgs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON orgs TO sable_app
    USING (sable_org_visible(id)) WITH CHECK (sable_org_visible(id));
-- Tables later migrations create are the application's too.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO sable_app;
