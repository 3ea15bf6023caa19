//! SHOW SHARDS (pgsluice's own): one row per shard of every sharded database and
//! server user, with where the shard is, its pool's connections and what was routed
//! to it. Plain and replicated databases have no rows.

use super::super::result::{ResultSet, Ty};
use super::super::Ctx;

use Ty::{Int4, Int8, Text};

/// The columns of SHOW SHARDS.
const SHARD_COLUMNS: [(&str, Ty); 11] = [
    ("database", Text),
    ("user", Text),
    ("shard", Int4),
    ("host", Text),
    ("port", Int4),
    ("dbname", Text),
    ("state", Text),
    ("sv_active", Int4),
    ("sv_idle", Int4),
    ("queries_routed", Int8),
    ("cross_shard_queries", Int8),
];

/// SHOW SHARDS. `state`: `paused` (PAUSE), `disabled` (DISABLE), `retired` (a
/// reload changed the database; its clients finish on these pools) or `active`.
/// `queries_routed`: requests that ran on this shard alone; `cross_shard_queries`:
/// requests of the database (and user) that ran on several shards, the same on each
/// of its rows.
pub(super) fn shards(ctx: &Ctx<'_>) -> ResultSet {
    let router = ctx.console.router();
    let flags = router.db_flags();
    let mut rs = ResultSet::new(&SHARD_COLUMNS);
    for set in router.shard_sets() {
        let key = set.key();
        let state = if set.is_retired() {
            "retired"
        } else if flags.disabled.contains(key.database.as_ref()) {
            "disabled"
        } else if flags.is_paused(&key.database) {
            "paused"
        } else {
            "active"
        };
        for (i, pool) in set.pools().iter().enumerate() {
            let target = pool.target();
            let counts = pool.counts();
            rs.push(vec![
                key.database.as_ref().into(),
                key.user.as_ref().into(),
                (i as i32).into(),
                target.host.as_str().into(),
                (target.port as i32).into(),
                target.database.as_str().into(),
                state.into(),
                counts.sv_active.into(),
                counts.sv_idle.into(),
                set.queries(i).into(),
                set.fanout_queries().into(),
            ]);
        }
    }
    rs
}
