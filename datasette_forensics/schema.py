"""The forensic database schema, applied through sqlite-utils migrations.

Every command and Datasette's startup call :func:`ensure_schema`. The layout is
built for tens of millions of requests: ``requests`` is narrow and integer-keyed,
and every repeated string (addresses, user agents, URIs, paths, referers) lives
once in a dictionary table, enriched once per distinct value.
"""

from __future__ import annotations

import sqlite3

import sqlite_utils
from sqlite_utils.migrations import Migrations

from . import derived
from .derived import indexes, window_hours
from .errors import ForensicsError
from .timeparse import utcnow

migrations = Migrations("datasette_forensics")


def ddl_migration(name: str, ddl: str) -> None:
    """Register migration ``name``: frozen DDL text, run as it is written."""
    migrations(name=name)(lambda db: db.executescript(ddl))


# Times of requests are integer milliseconds since the epoch, UTC. Times in the
# account records are kept as normalised ISO 8601 text (YYYY-MM-DDTHH:MM:SS.mmmZ),
# which sorts and compares like the instant it names.

INITIAL = """
create table import_batches (
    id integer primary key,
    name text,
    source text not null,
    format text,
    size integer,
    sha256 text,
    head_sha256 text,
    started_at text not null,
    finished_at text,
    status text not null default 'running',
    message text,
    pid integer,
    lines_read integer not null default 0,
    lines_imported integer not null default 0,
    lines_rejected integer not null default 0,
    lines_duplicate integer not null default 0,
    last_line integer not null default 0,
    command text
);

create table rejected_lines (
    id integer primary key,
    batch_id integer not null references import_batches(id),
    line_no integer not null,
    raw text,
    raw_bytes blob,
    reason text not null
);
create index rejected_lines_batch on rejected_lines(batch_id, line_no);

-- Lines whose bytes were not valid UTF-8: the exact bytes, for any stored request.
create table raw_bytes (
    batch_id integer not null,
    line_no integer not null,
    raw blob not null,
    primary key (batch_id, line_no)
) without rowid;

-- How many copies of each distinct raw line the database holds (imported or
-- rejected), keyed by a 64-bit BLAKE2b hash of the line's bytes.
-- seen/batch_id track copies inside the batch that last touched the line (base:
-- unused since m010; see line_counts_suspended).
create table line_counts (
    h integer primary key,
    n integer not null,
    batch_id integer not null,
    base integer not null,
    seen integer not null
);

create table ips (
    id integer primary key,
    ip text not null unique,
    version integer,            -- 4, 6, or null for a host name
    prefix text,                -- /24 for IPv4, /48 for IPv6, the host name itself otherwise
    prefix16 text,              -- /16 for IPv4 and IPv6 (/32 for IPv6), domain for host names
    asn text,
    provider text,
    rdns text
);

create table user_agents (
    id integer primary key,
    ua text not null unique,    -- '' when the log had none
    family text,
    major text,
    os text,
    device text,
    kind text                   -- browser, library, bot, unknown
);

create table paths (
    id integer primary key,
    path text not null unique,
    scope_match integer,        -- 1 when a scope_paths regex matches (null until an incident is set)
    slug text,                  -- org slug captured by the first org_routes match
    org_static text,            -- the org whose current slug it is (orgs.slug)
    slug_timed integer          -- 1 when org_slugs has history for the slug: resolve per request time
);
create index paths_unclassified on paths(id) where scope_match is null;

create table uris (
    id integer primary key,
    uri text not null unique,
    path_id integer not null references paths(id)
);

create table referers (
    id integer primary key,
    referer text not null unique
);

-- A signature is the pair (remote_addr, exact user agent).
create table signatures (
    id integer primary key,
    ip_id integer not null references ips(id),
    ua_id integer not null references user_agents(id),
    unique (ip_id, ua_id)
);

create table requests (
    id integer primary key,
    batch_id integer not null,
    line_no integer not null,
    ts integer not null,        -- epoch milliseconds, UTC
    sig_id integer not null,
    uri_id integer not null,
    method text,
    status integer,
    bytes integer,
    referer_id integer,
    token_id text,
    org_id text,                -- an org id carried by the log line itself
    extra text                  -- JSON: other fields of the line (host, x-forwarded-for, timings...)
);
create index requests_ts on requests(ts);
create index requests_sig on requests(sig_id);
create index requests_batch on requests(batch_id, line_no);
create index requests_token on requests(token_id) where token_id is not null;

-- The incident under investigation (one row).
create table incident (
    id integer primary key check (id = 1),
    name text not null,
    introduced_at text not null,
    patched_at text not null,
    introduced_ms integer not null,
    patched_ms integer not null,
    scope_paths text not null,  -- JSON list of regexes
    org_routes text not null,   -- JSON list of regexes with a group named org
    require_integration integer not null default 1,
    source text,
    set_at text
);

-- In-scope requests: one row each, with the org it reached and a bit mask of the
-- applied rules that explain it (0 = unexplained). m007 re-keys it by
-- (sig_id, org_id, request_id).
create table scoped (
    request_id integer primary key,
    org_id text not null,
    sig_id integer not null,
    ts integer not null,
    explained integer not null default 0
);
create index scoped_org on scoped(org_id, ts);
create index scoped_sig on scoped(sig_id, org_id, explained);

-- Pre-aggregated (signature, org) figures, kept current by imports and rules:
-- the pivot pages and statuses read these instead of grouping millions of rows.
create table sig_org (
    sig_id integer not null,
    org_id text not null,
    requests integer not null,
    unexplained integer not null,
    first_ts integer,
    last_ts integer,
    primary key (sig_id, org_id)
) without rowid;
create index sig_org_org on sig_org(org_id);

-- Record times as integer milliseconds, rebuilt from the account records whenever
-- they change, so scope and rules compare integers.
create table slug_windows (slug text not null, org_id text not null, from_ms integer not null, to_ms integer);
create index slug_windows_slug on slug_windows(slug, from_ms);
create table integration_windows (org_id text not null, from_ms integer not null, to_ms integer);
create index integration_windows_org on integration_windows(org_id, from_ms);

-- Signatures with their in-scope reach.
create table signature_scope (
    sig_id integer primary key,
    orgs integer not null,
    requests integer not null,
    cross_tenant integer not null
);

-- (signature, org) pairs with a 2xx request at or after patched_at.
create table post_patch_valid (
    sig_id integer not null,
    org_id text not null,
    requests integer not null,
    primary key (sig_id, org_id)
) without rowid;

create table rules (
    name text primary key,
    bit integer not null unique,
    builtin integer not null,
    description text not null,
    definition text,            -- JSON, custom rules only
    applied integer not null default 0,
    applied_seq integer,
    created_by text,
    created_at text
);

create table rule_ledger (
    id integer primary key,
    rule text not null,
    action text not null,       -- apply, undo, create, delete
    actor text,
    at text not null,
    requests_explained integer,
    orgs_changed text           -- JSON list of {org_id, from, to}
);

create table saved_views (
    id integer primary key,
    name text not null,
    url text not null,
    created_by text,
    created_at text not null
);
"""


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.executescript(INITIAL)


def connect(path: str) -> sqlite_utils.Database:
    """Open (creating if needed) a forensic database, tuned for bulk work.

    Args:
        path: the SQLite file.

    Returns:
        a sqlite_utils Database with the schema applied.
    """
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    db = sqlite_utils.Database(conn)
    tune(conn)
    ensure_schema(db)
    indexes.settle(conn)  # indexes a killed first import left to build
    return db


def tune(conn: sqlite3.Connection) -> None:
    """WAL so pages keep answering while an import writes; generous cache."""
    conn.execute("pragma journal_mode = wal")
    conn.execute("pragma synchronous = normal")
    conn.execute("pragma busy_timeout = 30000")
    conn.execute("pragma cache_size = -65536")
    # Temporary tables and sorts (scope, aggregates, rules) spill to a file beyond the
    # cache: kept in memory, they grew with the data (+230 MB at 300,000 signatures).
    conn.execute("pragma temp_store = file")


def is_forensic_database(conn) -> bool:
    """A database this plugin manages: it holds our migrations or our import table."""
    names = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
    if "import_batches" in names:
        return True
    if "_sqlite_migrations" in names:
        return bool(
            conn.execute(
                "select 1 from _sqlite_migrations where migration_set = ?",
                [migrations.name],
            ).fetchone()
        )
    return False


def ensure_schema(db: sqlite_utils.Database) -> None:
    """Apply any pending migrations, then finish any unfinished derived work.

    Raises:
        ForensicsError: a database this version cannot migrate, saying how to rebuild it.
    """
    try:
        if _unrecorded_layout(db):
            raise sqlite3.DatabaseError("it holds forensic tables but no record of their migrations")
        if migrations.pending(db):
            migrations.apply(db)
    except sqlite3.DatabaseError as exc:
        if db.conn.in_transaction:
            db.conn.execute("rollback")
        raise ForensicsError(
            f"This database was made by a version of datasette-forensics that cannot be migrated ({exc}): "
            "rebuild it by importing its records, incident and logs into a new database."
        ) from None
    derived.finish(db)


# Tables of the first migration: a database holding one without any record of
# applied migrations was made before they existed (or by something else).
FIRST_TABLES = ("import_batches", "requests", "signatures", "scoped")


def _unrecorded_layout(db: sqlite_utils.Database) -> bool:
    tables = set(db.table_names())
    if not tables & set(FIRST_TABLES):
        return False
    return "_sqlite_migrations" not in tables or not db.execute(
        "select 1 from _sqlite_migrations where migration_set = ? limit 1", [migrations.name]
    ).fetchone()


# Account records (MODEL §1.2): one table per kind, named as the kind. Ids are text
# as given; times are normalised ISO text; columns the files add are TEXT, added on
# import. Each kind's key has a unique index named <kind>_key.
RECORDS = """
create table orgs (
    id text not null,
    slug text not null,
    name text,
    created_at text,
    contact_email text
);
create unique index orgs_key on orgs(id);
create index orgs_slug on orgs(slug);

create table org_slugs (
    org_id text not null,
    slug text not null,
    valid_from text not null,
    valid_to text
);
create unique index org_slugs_key on org_slugs(org_id, slug, valid_from);
create index org_slugs_slug on org_slugs(slug, valid_from);

create table integrations (
    id text not null,
    org_id text not null,
    name text,
    created_at text not null,
    deleted_at text
);
create unique index integrations_key on integrations(id);
create index integrations_org on integrations(org_id);

create table tokens (
    id text not null,
    org_id text not null,
    integration_id text,
    created_at text,
    revoked_at text
);
create unique index tokens_key on tokens(id);
create index tokens_org on tokens(org_id);

create table users (
    id text not null,
    email text not null,
    name text,
    is_staff integer
);
create unique index users_key on users(id);

-- The key (user_id, org_id, joined_at) also serves lookups by (user_id, org_id).
create table memberships (
    user_id text not null,
    org_id text not null,
    role text,
    joined_at text not null,
    left_at text
);
create unique index memberships_key on memberships(user_id, org_id, joined_at);

create table sessions (
    user_id text not null,
    ip text not null,
    user_agent text not null,   -- exact, as logged; '' for none
    first_seen text not null,
    last_seen text not null
);
create unique index sessions_key on sessions(user_id, ip, user_agent);
create index sessions_signature on sessions(ip, user_agent);

create table partners (
    name text not null,
    cidr text not null,         -- normalised network, e.g. 203.0.113.0/24
    user_agent_pattern text     -- Python regex; null matches any user agent
);
create unique index partners_key on partners(name, cidr);

-- authorized_at is optional yet part of the key: an empty one is one key value.
-- The key also serves lookups by (partner, org_id).
create table partner_orgs (
    partner text not null,
    org_id text not null,
    authorized_at text,
    revoked_at text
);
create unique index partner_orgs_key on partner_orgs(partner, org_id, ifnull(authorized_at, ''));

create table ip_info (
    cidr text not null,         -- normalised network; a /32 or /128 names one address
    asn text,
    provider text,
    rdns text
);
create unique index ip_info_key on ip_info(cidr);
"""


@migrations()
def m002_records(db: sqlite_utils.Database) -> None:
    db.executescript(RECORDS)


# The rules page's waterfall, recomputed by the rules engine after every apply,
# undo and re-evaluation so the page never scans scoped: position 0 is the
# in-scope total, position n the requests still unexplained after the n-th applied
# rule and every rule before it. rule_ledger.detail keeps what an entry needs
# beyond counts (a custom rule's definition).
RULE_WATERFALL = """
create table rule_waterfall (
    position integer primary key,
    rule text,
    remaining integer not null,
    explained integer,
    computed_at text not null
);
alter table rule_ledger add column detail text;
"""


@migrations()
def m003_rule_waterfall(db: sqlite_utils.Database) -> None:
    db.executescript(RULE_WATERFALL)


# The workbench pages' aggregates, kept current by datasette_forensics.aggregates
# after every log batch and scope recompute (rules never change them).
PAGE_AGGREGATES = """
create table sig_stats (
    sig_id integer primary key,
    ip_id integer not null,
    ua_id integer not null,
    requests integer not null,          -- every stored request, in scope or not
    ok integer not null,                -- 2xx among them
    first_ts integer,
    last_ts integer,
    last_uri_id integer,                -- the uri of its latest request
    after_patch integer not null,       -- requests at or after patched_at (0 before an incident)
    after_patch_ok integer not null,    -- 2xx among them
    in_scope integer not null,          -- from signature_scope
    orgs integer not null,
    cross_tenant integer not null
);
create index sig_stats_ip on sig_stats(ip_id);
create index sig_stats_ua on sig_stats(ua_id);
"""


@migrations()
def m004_page_aggregates(db: sqlite_utils.Database) -> None:
    db.executescript(PAGE_AGGREGATES)  # m005 adds the rest and fills them
    db.executescript(REQUESTS_VIEW)


# Every request with its strings resolved: the drill-down target, and the only
# relation custom rule predicates may read. in_scope and unexplained have integer
# affinity: the pages' drill-down links filter on them, and Datasette binds
# ?in_scope=1 as text, which an expression column without affinity never equals.
REQUESTS_VIEW = """
create view requests_view as
select
    r.id,
    strftime('%Y-%m-%dT%H:%M:%S', r.ts / 1000, 'unixepoch') || printf('.%03dZ', r.ts % 1000) as time,
    r.ts,
    i.ip,
    i.prefix as cidr24,
    i.prefix16 as cidr16,
    i.asn,
    i.provider,
    i.rdns,
    a.ua as user_agent,
    a.family as ua_family,
    a.major as ua_major,
    a.os as ua_os,
    a.kind as ua_kind,
    r.method,
    u.uri,
    p.path,
    r.status,
    r.bytes,
    rf.referer,
    r.token_id,
    coalesce(s.org_id, r.org_id) as org_id,
    cast(s.request_id is not null as integer) as in_scope,
    s.explained,
    cast(case when s.request_id is null then null when s.explained = 0 then 1 else 0 end as integer) as unexplained,
    r.sig_id,
    r.batch_id,
    r.line_no
from requests r
join signatures g on g.id = r.sig_id
join ips i on i.id = g.ip_id
join user_agents a on a.id = g.ua_id
join uris u on u.id = r.uri_id
join paths p on p.id = u.path_id
left join referers rf on rf.id = r.referer_id
left join scoped s on s.request_id = r.id;
"""


# The rest of the pages' aggregates: per-signature unexplained requests, the
# pre-grouped pivots, per-org and per-(org, day) figures, and the triggers that
# carry rule changes into them (see datasette_forensics.aggregates).
PAGE_GROUPS = """
alter table sig_stats add column unexplained integer not null default 0;  -- the sum of its sig_org rows
create index sig_stats_rank on sig_stats(cross_tenant desc, unexplained desc, in_scope desc, requests desc);
create index sig_org_rank on sig_org(org_id, unexplained desc, requests desc);  -- an org's main signature

create table pivot_groups (
    grouping text not null,             -- ip, cidr24, cidr16, asn, provider, rdns, raw, family, family_major, os, kind
    gkey text not null,                 -- json_array of the group's values (null: unknown); raw: of the ua id
    k1 text,                            -- the values
    k2 text,
    requests integer not null,
    in_scope integer not null,
    unexplained integer not null,
    orgs integer not null default 0,    -- distinct orgs reached in scope
    signatures integer not null,
    ips integer not null,
    user_agents integer not null,
    first_ts integer,
    last_ts integer,
    browser integer not null,           -- requests by user-agent kind
    library integer not null,
    bot integer not null,
    unknown integer not null,
    top_ua_id integer,                  -- the user agent with most requests
    last_uri_id integer,                -- the uri of the latest request
    primary key (grouping, gkey)
) without rowid;
create index pivot_groups_rank on pivot_groups(grouping, unexplained desc, in_scope desc, requests desc);

create table org_stats (
    org_id text primary key,
    in_scope integer not null,
    unexplained integer not null,
    signatures integer not null,
    unexplained_signatures integer not null,
    cross_tenant_signatures integer not null,
    unexplained_cross_tenant integer not null,  -- > 0: exposed
    first_ts integer,
    last_ts integer
) without rowid;

create table scope_days (
    org_id text not null,
    day integer not null,               -- UTC days since the epoch
    in_scope integer not null,
    unexplained integer not null,
    primary key (org_id, day)
) without rowid;
create index scope_days_day on scope_days(day);
"""


@migrations()
def m005_page_groups(db: sqlite_utils.Database) -> None:
    """The tables only: m012_owner_derived_state has them filled before any reading."""
    db.executescript(PAGE_GROUPS)


@migrations()
def m006_rules_move_days(db: sqlite_utils.Database) -> None:
    """Rules now move timeline counts per (org, day) themselves: the per-request trigger goes."""
    db.execute("drop trigger if exists aggregates_scoped_explained")


# In-scope requests clustered by (signature, org): rules explain whole (signature,
# org) ranges at a time, so keeping each pair's requests together turns a rule's
# millions of scattered row and index updates into sequential page writes.
SCOPED_CLUSTERED = """
create table scoped_clustered (
    sig_id integer not null,
    org_id text not null,
    request_id integer not null,
    ts integer not null,
    explained integer not null default 0,
    primary key (sig_id, org_id, request_id)
) without rowid;
insert into scoped_clustered (sig_id, org_id, request_id, ts, explained)
select sig_id, org_id, request_id, ts, explained from scoped order by sig_id, org_id, request_id;
drop view requests_view;
drop table scoped;
alter table scoped_clustered rename to scoped;
create unique index scoped_request on scoped(request_id);
create index scoped_org on scoped(org_id, ts);
"""


@migrations()
def m007_scoped_clustered(db: sqlite_utils.Database) -> None:
    """scoped becomes a WITHOUT ROWID table keyed (sig_id, org_id, request_id)."""
    db.executescript(SCOPED_CLUSTERED)
    db.executescript(REQUESTS_VIEW)


# The row triggers that carried sig_org.unexplained into the other aggregates
# before aggregates.move_unexplained() did it set-wise.
OLD_TRIGGERS = ("aggregates_sig_org_unexplained", "aggregates_sig_stats_unexplained")


@migrations()
def m008_unexplained_set_based(db: sqlite_utils.Database) -> None:
    """Rules move unexplained counts set-wise (aggregates.move_unexplained): the row triggers go."""
    for name in OLD_TRIGGERS:
        db.execute(f"drop trigger if exists {name}")


@migrations()
def m009_raw_groups_by_id(db: sqlite_utils.Database) -> None:
    """The raw user-agent groups are keyed by the agent's id, not its text (aggregates.GKEYS)."""
    # Rebuilt with everything else: m012_owner_derived_state marks the database stale.
    db.execute("delete from pivot_groups where grouping = 'raw'")


# The copies-seen count of an unfinished batch, for a line that another batch
# touched meanwhile (see ingest.BatchWriter._deduplicate); line_counts.base is no
# longer used.
LINE_COUNTS_SUSPENDED = """
create table line_counts_suspended (
    batch_id integer not null,
    h integer not null,
    seen integer not null,
    primary key (batch_id, h)
) without rowid;
"""


ddl_migration("m010_line_counts_suspended", LINE_COUNTS_SUSPENDED)


# Per unfinished batch and dictionary table, the id below which every row the
# batch's reader handed out is stored as it was (see dictionaries.py): the reader,
# maybe in a child process, may look those rows up as its own.
DICTIONARY_WATERMARKS = """
create table dictionary_watermarks (
    batch_id integer not null,
    tbl text not null,
    upto integer not null,
    primary key (batch_id, tbl)
) without rowid;
"""


ddl_migration("m011_dictionary_watermarks", DICTIONARY_WATERMARKS)


# owner: derived work that must be finished before anything is read. A row says
# everything derived is to be recomputed from the base tables (derived.finish does
# it, from ensure_schema, so every command and Datasette's startup do it first).
DERIVED_STATE = """
create table derived_state (
    work text primary key,
    reason text not null,
    since text not null
) without rowid;
"""


@migrations()
def m012_owner_derived_state(db: sqlite_utils.Database) -> None:
    """An older database's derived tables (filled by older code, or left empty by
    m005 and m009) are recomputed once, before anything reads them."""
    db.executescript(DERIVED_STATE)
    if db.execute("select exists (select 1 from requests)").fetchone()[0]:
        db.execute(
            "insert into derived_state (work, reason, since) values ('all', ?, ?)",
            ["migrated from an older version", utcnow()],
        )


# owner: the bit each rule owns, given on first sight and kept (rules/bits.py); the
# rules a database already has keep their bits, built-in and custom alike.
RULE_BITS = """
create table rule_bits (
    bit integer primary key,            -- 0..62: the rule's mask is 1 << bit
    name text not null unique,
    allocated_at text not null
);
create unique index rules_bit on rules(bit);
"""


@migrations()
def m013_owner_rule_bits(db: sqlite_utils.Database) -> None:
    db.executescript(RULE_BITS)
    db.conn.executemany(
        "insert into rule_bits (bit, name, allocated_at) values (?, ?, ?)",
        [
            (bit.bit_length() - 1, name, created_at or utcnow())
            for name, bit, created_at in db.execute("select name, bit, created_at from rules")
        ],
    )


# The import's write protocol (datasette_forensics/derived/): duplicate-line counts
# appended by a batch that has the database to itself, merged into line_counts in
# hash order (derived/line_counts.py), and the indexes a first import drops while it
# loads and builds by a sort at its end (derived/indexes.py).
WRITE_PROTOCOL = """
create table line_counts_staged (
    batch_id integer not null,
    h integer not null,
    n integer not null
);
create table deferred_indexes (
    name text primary key,
    tbl text not null,
    sql text not null,
    batch_id integer not null
);
"""


ddl_migration("m014_perf_write_protocol", WRITE_PROTOCOL)


# Notes and tags (MODEL §6.4, datasette_forensics.notes): a note is about one
# target (kind: org, signature, ip, cidr, user_agent; target: the org id, the
# address, the normalised network, the user agent, or JSON [ip, ua]) and holds a
# tag, text or both. note_history keeps every version (write, edit, delete).
CASE_NOTES = """
create table notes (
    id integer primary key,
    kind text not null,
    target text not null,
    tag text,
    text text,
    created_by text,
    created_at text not null,
    updated_by text,
    updated_at text,
    deleted_by text,
    deleted_at text
);
create index notes_target on notes(kind, target);
create index notes_tag on notes(tag, kind);

create table note_history (
    id integer primary key,
    note_id integer not null references notes(id),
    action text not null,       -- write, edit, delete
    tag text,
    text text,
    actor text,
    at text not null
);
create index note_history_note on note_history(note_id);
"""


ddl_migration("m015_case_notes", CASE_NOTES)


# Verdicts (MODEL §6.3, datasette_forensics.verdicts): one signature, for one org
# (org_id) or every org (null), with the analyst's reason. A withdrawn verdict
# stays, with who withdrew it and when.
CASE_VERDICTS = """
create table verdicts (
    id integer primary key,
    ip text not null,
    user_agent text not null,
    org_id text,
    reason text not null,
    actor text,
    created_at text not null,
    withdrawn_by text,
    withdrawn_at text
);
create index verdicts_signature on verdicts(ip, user_agent);
"""


ddl_migration("m016_case_verdicts", CASE_VERDICTS)


# Notification records (MODEL §6.6, datasette_forensics.notify): one row per
# rendered message, with the org's status and unexplained count at that time.
CASE_NOTIFICATIONS = """
create table notifications (
    id integer primary key,
    org_id text not null,
    at text not null,
    status text not null,
    unexplained integer not null,
    contact_email text,
    subject text,
    file text,
    actor text
);
create index notifications_org on notifications(org_id, id);
"""


ddl_migration("m017_case_notifications", CASE_NOTIFICATIONS)


# Why each request is out of scope (MODEL §6.1, derived/out_of_scope.py), and
# requests_view's case columns: explained_by (the applied rules and verdicts that
# explain an in-scope request, comma-separated in applied order; '' when none, null
# out of scope), out_of_scope (the reason; null in scope) and named_org_id (the org
# an out-of-scope request names or routes to, known or not).
CASE_OUT_OF_SCOPE = """
create table out_of_scope_counts (
    org_id text not null,       -- '' when the request names no org
    reason text not null,
    n integer not null,
    primary key (org_id, reason)
) without rowid;
"""
# Frozen text (the requests_view of m007 with the three case columns added).
CASE_REQUESTS_VIEW = """

create view requests_view as
select
    r.id,
    strftime('%Y-%m-%dT%H:%M:%S', r.ts / 1000, 'unixepoch') || printf('.%03dZ', r.ts % 1000) as time,
    r.ts,
    i.ip,
    i.prefix as cidr24,
    i.prefix16 as cidr16,
    i.asn,
    i.provider,
    i.rdns,
    a.ua as user_agent,
    a.family as ua_family,
    a.major as ua_major,
    a.os as ua_os,
    a.kind as ua_kind,
    r.method,
    u.uri,
    p.path,
    r.status,
    r.bytes,
    rf.referer,
    r.token_id,
    coalesce(s.org_id, r.org_id) as org_id,
    cast(s.request_id is not null as integer) as in_scope,
    s.explained,
    cast(case when s.request_id is null then null when s.explained = 0 then 1 else 0 end as integer) as unexplained,
    case when s.request_id is not null then coalesce((
        select group_concat(name, ',') from (
            select name from rules where applied = 1 and (s.explained & bit) != 0 order by applied_seq
        )), '') end as explained_by,
    case when s.request_id is null then (
    select case
        when r.ts < x.introduced_ms or r.ts >= x.patched_ms then 'outside_window'
        when coalesce(p.scope_match, 0) = 0 then 'path_not_in_scope'
        when r.org_id is null and p.slug is null then 'no_org'
        when o.org_id is null or o.org_id not in (select id from orgs) then 'unknown_org'
        when x.require_integration and not exists (
            select 1 from integration_windows i
            where i.org_id = o.org_id and i.from_ms <= r.ts and (i.to_ms is null or r.ts < i.to_ms)
        ) then 'no_live_integration'
    end
    from incident x, (select 
coalesce(
    r.org_id,
    case when p.slug_timed then (
        select w.org_id from slug_windows w
        where w.slug = p.slug and w.from_ms <= r.ts and (w.to_ms is null or r.ts < w.to_ms)
        order by w.from_ms desc limit 1
    ) end,
    p.org_static
) as org_id) o
) end as out_of_scope,
    case when s.request_id is null then 
coalesce(
    r.org_id,
    case when p.slug_timed then (
        select w.org_id from slug_windows w
        where w.slug = p.slug and w.from_ms <= r.ts and (w.to_ms is null or r.ts < w.to_ms)
        order by w.from_ms desc limit 1
    ) end,
    p.org_static
) end as named_org_id,
    r.sig_id,
    r.batch_id,
    r.line_no
from requests r
join signatures g on g.id = r.sig_id
join ips i on i.id = g.ip_id
join user_agents a on a.id = g.ua_id
join uris u on u.id = r.uri_id
join paths p on p.id = u.path_id
left join referers rf on rf.id = r.referer_id
left join scoped s on s.request_id = r.id;
"""


@migrations()
def m018_case_out_of_scope(db: sqlite_utils.Database) -> None:
    db.executescript(CASE_OUT_OF_SCOPE)
    if db.execute("select exists (select 1 from requests)").fetchone()[0]:
        db.execute(
            "insert or replace into derived_state (work, reason, since) values ('all', ?, ?)",
            ["out_of_scope_counts to fill", utcnow()],
        )
    db.execute("drop view if exists requests_view")
    db.executescript(CASE_REQUESTS_VIEW)


# pages: the raw line of every imported request, compressed per block of a chunk's
# lines (datasette_forensics.rawlines), for the request page (views/request.py).
# Requests imported before this keep no raw line: their request page says so.
PAGES_RAW_CHUNKS = """
create table raw_chunks (
    batch_id integer not null,
    first_line integer not null,
    last_line integer not null,
    meta blob not null,         -- zlib of uint32s: each line's offset from first_line, then each line's length
    lines blob not null,        -- zlib of the lines' bytes, concatenated
    primary key (batch_id, first_line)
) without rowid;
"""
ddl_migration("m019_pages_raw_chunks", PAGES_RAW_CHUNKS)

# pages: the requests page's signature filters (/24, /16, family, kind) find their
# signatures through these instead of scanning a dictionary table.
PAGES_FILTER_INDEXES = """
create index ips_prefix on ips(prefix);
create index ips_prefix16 on ips(prefix16);
create index user_agents_family on user_agents(family, major);
create index user_agents_kind on user_agents(kind);
"""
ddl_migration("m019_pages_filter_indexes", PAGES_FILTER_INDEXES)


# pages: requests_sig keyed (sig_id, ts), so the requests page walks a few
# signatures' requests back in time by index ranges (views/requests.py); lookups
# by sig_id alone read it as before. A first import that has the index deferred
# builds the new one at its end.
PAGES_SIG_TIME_INDEX = "create index requests_sig on requests(sig_id, ts)"


@migrations()
def m019_pages_sig_time_index(db: sqlite_utils.Database) -> None:
    if db.execute("select 1 from deferred_indexes where name = 'requests_sig'").fetchone():
        db.execute("update deferred_indexes set sql = ? where name = 'requests_sig'", [PAGES_SIG_TIME_INDEX])
    else:
        db.execute("drop index if exists requests_sig")
        db.execute(PAGES_SIG_TIME_INDEX)


# Who owns each client address (MODEL §7; ipinfo.py fills these, geo.py and rdns.py
# supply them): the network kind, country and owner name from the data geoip2fast
# ships, and the PTR name enrich-rdns looked up, with its outcome and time. ip_info
# still gives asn, provider and rdns, which fall back to the shipped owner name and
# the PTR name. requests_view gains them, and the peer address a request came
# through when --trusted-proxy made a forwarded address its client (extra.peer).
# The view is m018's, frozen here as text.
GEO_IP_OWNERS = """
alter table ips add column network text;      -- public, private, loopback, link_local, cgnat, documentation, multicast, reserved
alter table ips add column country text;      -- ISO 3166 alpha-2, from the shipped data (public addresses)
alter table ips add column as_name text;      -- the owner's registered network name, from the shipped data
alter table ips add column ptr text;          -- the PTR name enrich-rdns found
alter table ips add column ptr_status text;   -- ok, nxdomain, no_answer, timeout, error
alter table ips add column ptr_at text;       -- when enrich-rdns looked it up (UTC)
drop view if exists requests_view;
"""
# The owner columns start empty: derived.finish fills them (in batches of ids), and
# the pivot groups they feed, before anything reads, when there are addresses.
GEO_FILL = """
insert or replace into derived_state (work, reason, since)
select 'ip_owners', 'addresses'' owners to fill', strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
where exists (select 1 from ips);
"""
GEO_REQUESTS_VIEW = """
create view requests_view as
select
    r.id,
    strftime('%Y-%m-%dT%H:%M:%S', r.ts / 1000, 'unixepoch') || printf('.%03dZ', r.ts % 1000) as time,
    r.ts,
    i.ip,
    json_extract(r.extra, '$.peer') as peer,
    i.prefix as cidr24,
    i.prefix16 as cidr16,
    i.asn,
    i.provider,
    i.rdns,
    i.as_name,
    i.country,
    i.network,
    a.ua as user_agent,
    a.family as ua_family,
    a.major as ua_major,
    a.os as ua_os,
    a.kind as ua_kind,
    r.method,
    u.uri,
    p.path,
    r.status,
    r.bytes,
    rf.referer,
    r.token_id,
    coalesce(s.org_id, r.org_id) as org_id,
    cast(s.request_id is not null as integer) as in_scope,
    s.explained,
    cast(case when s.request_id is null then null when s.explained = 0 then 1 else 0 end as integer) as unexplained,
    case when s.request_id is not null then coalesce((
        select group_concat(name, ',') from (
            select name from rules where applied = 1 and (s.explained & bit) != 0 order by applied_seq
        )), '') end as explained_by,
    case when s.request_id is null then (
    select case
        when r.ts < x.introduced_ms or r.ts >= x.patched_ms then 'outside_window'
        when coalesce(p.scope_match, 0) = 0 then 'path_not_in_scope'
        when r.org_id is null and p.slug is null then 'no_org'
        when o.org_id is null or o.org_id not in (select id from orgs) then 'unknown_org'
        when x.require_integration and not exists (
            select 1 from integration_windows i
            where i.org_id = o.org_id and i.from_ms <= r.ts and (i.to_ms is null or r.ts < i.to_ms)
        ) then 'no_live_integration'
    end
    from incident x, (select 
coalesce(
    r.org_id,
    case when p.slug_timed then (
        select w.org_id from slug_windows w
        where w.slug = p.slug and w.from_ms <= r.ts and (w.to_ms is null or r.ts < w.to_ms)
        order by w.from_ms desc limit 1
    ) end,
    p.org_static
) as org_id) o
) end as out_of_scope,
    case when s.request_id is null then 
coalesce(
    r.org_id,
    case when p.slug_timed then (
        select w.org_id from slug_windows w
        where w.slug = p.slug and w.from_ms <= r.ts and (w.to_ms is null or r.ts < w.to_ms)
        order by w.from_ms desc limit 1
    ) end,
    p.org_static
) end as named_org_id,
    r.sig_id,
    r.batch_id,
    r.line_no
from requests r
join signatures g on g.id = r.sig_id
join ips i on i.id = g.ip_id
join user_agents a on a.id = g.ua_id
join uris u on u.id = r.uri_id
join paths p on p.id = u.path_id
left join referers rf on rf.id = r.referer_id
left join scoped s on s.request_id = r.id
"""


ddl_migration("m021_geo_ip_owners", GEO_IP_OWNERS + GEO_REQUESTS_VIEW + ";" + GEO_FILL)


# The day cells m022 made; m025 drops them (window_hours replaced them).
# m022_win2_window_days
WINDOW_DAYS = """
create table window_days (
    day integer not null,
    sig_id integer not null,
    org_id text not null,
    requests integer not null,
    unexplained integer not null,
    first_ts integer not null,
    last_ts integer not null,
    primary key (day, sig_id, org_id)
) without rowid;
create index window_days_sig on window_days(sig_id);
create index window_days_org on window_days(org_id, day);
"""


@migrations()
def m022_win2_window_days(db: sqlite_utils.Database) -> None:
    """Time windows read whole days from window_days (until m025); an
    older database's cells are counted once, before anything reads them."""
    db.executescript(WINDOW_DAYS)
    if db.execute("select exists (select 1 from requests)").fetchone()[0]:
        db.execute(
            "insert or ignore into derived_state (work, reason, since) values ('window_days', ?, ?)",
            ["window_days to count", utcnow()],
        )


# In-scope requests per (applied rule, signature, org): the report's per-rule
# breakdown (derived/rule_counts.py), filled here for an existing database.
REPORT_RULE_COUNTS = """
create table rule_counts (
    rule_bit integer not null,      -- rules.bit
    sig_id integer not null,
    org_id text not null,
    requests integer not null,      -- in-scope requests of the pair carrying that bit, > 0
    primary key (rule_bit, sig_id, org_id)
) without rowid;

insert into rule_counts (rule_bit, sig_id, org_id, requests)
select r.bit, s.sig_id, s.org_id, count(*)
from scoped s join rules r on r.applied = 1 and (s.explained & r.bit) != 0
where s.explained != 0
group by r.bit, s.sig_id, s.org_id;
"""
ddl_migration("m023_report_rule_counts", REPORT_RULE_COUNTS)


@migrations()
def m024_cells_window_hours(db: sqlite_utils.Database) -> None:
    """Per-hour window cells (derived/window_hours.py) beside window_days; an older
    database's cells are counted once, through the window_days recount."""
    db.executescript(window_hours.WINDOW_HOURS)
    if db.execute("select exists (select 1 from requests)").fetchone()[0]:
        db.execute(
            "insert or ignore into derived_state (work, reason, since) values ('window_days', ?, ?)",
            ["window_hours to count", utcnow()],
        )


@migrations()
def m025_hours_drop_window_days(db: sqlite_utils.Database) -> None:
    """The hour cells (derived/window_hours.py) replace the day cells: windows read whole
    hours, so window_days goes (its queued count, if any, becomes the hour cells')."""
    db.execute("drop table if exists window_days")
    db.execute("update or ignore derived_state set work = 'window_hours' where work = 'window_days'")
    db.execute("delete from derived_state where work = 'window_days'")


# An org's hour cells for its timeline on the SQL path (views/sources.py), a range of
# this index rather than a scan of every cell.
TIMELINES_SCOPED_HOURS_ORG = "create index window_scoped_hours_org on window_scoped_hours(org_id, hour);"
ddl_migration("m026_timelines_scoped_hours_org", TIMELINES_SCOPED_HOURS_ORG)


# A later batch into a large database (derived/): the seen counts of the one unfinished
# batch while every other batch is finished (line_counts.py), kept apart from
# line_counts, which that batch then only reads, and merged into it in hash order when
# the batch closes; and the last request a full refresh of the aggregates counted
# (aggregates.py), below which a closing batch's requests are counted already.
LATER_BATCHES = """
create table line_counts_batch (
    h integer primary key,
    batch_id integer not null,
    seen integer not null
);
create table derived_upto (
    id integer primary key check (id = 1),
    request_id integer not null
);
insert into derived_upto (id, request_id) select 1, max(id) from requests having max(id) is not null;
"""
ddl_migration("m027_later_batches", LATER_BATCHES)


# idle_cells: the hour cells of a log batch are counted while the import waits for its
# parser, not in each chunk's transaction; ``window_hours_upto`` says how far they are
# counted (derived/window_hours.py). Cells kept before are complete: every request so far.
IDLE_CELLS_WINDOW_HOURS_UPTO = """
create table window_hours_upto (       -- window_hours counts every request with id < upto
    id integer primary key check (id = 1),
    upto integer not null
);
insert into window_hours_upto (id, upto) select 1, coalesce(max(id), 0) + 1 from requests;
"""
ddl_migration("m028_idle_cells_window_hours_upto", IDLE_CELLS_WINDOW_HOURS_UPTO)


# The Bloom filter of every line_counts hash (derived/line_filter.py): a later batch reads
# the counts of only the lines it may hold. rows is the count of line_counts it covers
# (-1: dropped); token grows at every write. Missing or stale, the next later batch builds it.
LINE_FILTER = """
create table line_filter (
    id integer primary key check (id = 1),
    token integer not null,
    rows integer not null,
    bits blob not null
);
"""
ddl_migration("m029_line_filter_store17", LINE_FILTER)


# m030: the unique keys of uris and paths become named indexes, which a first import
# can defer (derived/indexes.py): kept entry by entry, they were most of the store's
# work. Until now they were column constraints, whose automatic indexes SQLite cannot
# drop. The tables are rebuilt with the same columns and rows.
DICTIONARY_KEYS = """
drop view if exists requests_view;
create table paths_keyed (
    id integer primary key,
    path text not null,
    scope_match integer,        -- 1 when a scope_paths regex matches (null until an incident is set)
    slug text,                  -- org slug captured by the first org_routes match
    org_static text,            -- the org whose current slug it is (orgs.slug)
    slug_timed integer          -- 1 when org_slugs has history for the slug: resolve per request time
);
insert into paths_keyed (id, path, scope_match, slug, org_static, slug_timed)
select id, path, scope_match, slug, org_static, slug_timed from paths order by id;
drop table paths;
alter table paths_keyed rename to paths;
create unique index paths_path on paths(path);
create index paths_unclassified on paths(id) where scope_match is null;
create table uris_keyed (
    id integer primary key,
    uri text not null,
    path_id integer not null references paths(id)
);
insert into uris_keyed (id, uri, path_id) select id, uri, path_id from uris order by id;
drop table uris;
alter table uris_keyed rename to uris;
create unique index uris_uri on uris(uri);
"""
ddl_migration("m030_dictionary_keys", DICTIONARY_KEYS + GEO_REQUESTS_VIEW)
