//! Walks over expression trees as JSON (every pg_query node derives `Serialize`, so
//! no node type is skipped by accident): aggregates and window functions where a
//! merge cannot take them, and subqueries whose per-shard answers cannot be
//! combined. Expressions compare as JSON without their `location` fields.

use pg_query::protobuf::SetOperation;
use serde_json::Value;

use super::planning::refuse;
use super::Unsupported;

const NESTED: &str = "a subquery, WITH query or UNION ALL branch with aggregates, DISTINCT, \
GROUP BY, HAVING, LIMIT/OFFSET or window functions runs on each shard separately \
and cannot be merged";

/// Built-in aggregates other than count/sum/min/max, refused by name.
pub(super) const OTHER_AGGREGATES: &[&str] = &[
    "array_agg",
    "string_agg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "every",
    "json_agg",
    "json_agg_strict",
    "jsonb_agg",
    "jsonb_agg_strict",
    "json_object_agg",
    "json_object_agg_strict",
    "json_object_agg_unique",
    "json_object_agg_unique_strict",
    "jsonb_object_agg",
    "jsonb_object_agg_strict",
    "jsonb_object_agg_unique",
    "jsonb_object_agg_unique_strict",
    "xmlagg",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "corr",
    "covar_pop",
    "covar_samp",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "range_agg",
    "range_intersect_agg",
    "any_value",
];

/// A node as JSON without `location` fields.
pub(super) fn json<T: serde::Serialize>(node: &T) -> Value {
    let mut v = serde_json::to_value(node).unwrap_or(Value::Null);
    strip_locations(&mut v);
    v
}

fn strip_locations(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("location");
            map.values_mut().for_each(strip_locations);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_locations),
        _ => {}
    }
}

fn json_func_name(call: &Value) -> String {
    call["funcname"]
        .as_array()
        .and_then(|parts| parts.last())
        .and_then(|p| p["node"]["String"]["sval"].as_str())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn json_is_aggregate(call: &Value) -> bool {
    let name = json_func_name(call);
    matches!(name.as_str(), "count" | "sum" | "min" | "max" | "avg")
        || OTHER_AGGREGATES.contains(&name.as_str())
        || call["agg_star"].as_bool() == Some(true)
        || call["agg_distinct"].as_bool() == Some(true)
        || call["agg_within_group"].as_bool() == Some(true)
        || call["agg_order"].as_array().is_some_and(|a| !a.is_empty())
}

/// An expression of the top-level SELECT: no window functions, no aggregates (those
/// allowed are taken before), and nested SELECTs checked by [`check_nested`].
pub(super) fn check_expr(v: &Value, place: &str) -> Result<(), Unsupported> {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let Some(sub) = map.get("SelectStmt") {
                    check_nested(sub)?;
                    continue;
                }
                if let Some(call) = map.get("FuncCall") {
                    if !call["over"].is_null() {
                        return refuse("window functions over several shards");
                    }
                    if json_is_aggregate(call) {
                        let name = json_func_name(call);
                        if name == "avg" {
                            return refuse(
                                "avg() over several shards: select sum() and count() and divide",
                            );
                        }
                        return refuse(format!(
                            "an aggregate inside an expression in {place} ({name}() + 1...) over several shards: select the aggregate itself"
                        ));
                    }
                }
                if map.contains_key("GroupingFunc")
                    || map.contains_key("JsonArrayAgg")
                    || map.contains_key("JsonObjectAgg")
                {
                    return refuse(format!(
                        "an aggregate inside an expression in {place} over several shards"
                    ));
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    Ok(())
}

/// Anything below the top-level SELECT: no aggregates, window functions, DISTINCT,
/// GROUP BY, HAVING, LIMIT/OFFSET or set operations other than UNION ALL.
pub(super) fn check_nested(v: &Value) -> Result<(), Unsupported> {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let Some(s) = map.get("SelectStmt") {
                    let nonempty = |k: &str| s[k].as_array().is_some_and(|a| !a.is_empty());
                    let present = |k: &str| !s[k].is_null();
                    let op = s["op"].as_i64().unwrap_or(1);
                    let set_ok = op <= 1
                        || (op == SetOperation::SetopUnion as i64
                            && s["all"].as_bool() == Some(true));
                    if nonempty("distinct_clause")
                        || nonempty("group_clause")
                        || nonempty("window_clause")
                        || present("having_clause")
                        || present("limit_count")
                        || present("limit_offset")
                        || !set_ok
                    {
                        return refuse(NESTED);
                    }
                }
                if let Some(call) = map.get("FuncCall") {
                    if !call["over"].is_null() || json_is_aggregate(call) {
                        return refuse(NESTED);
                    }
                }
                if map.contains_key("GroupingFunc")
                    || map.contains_key("JsonArrayAgg")
                    || map.contains_key("JsonObjectAgg")
                {
                    return refuse(NESTED);
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    Ok(())
}

/// The first COLLATE in `v` whose collation does not order as bytes (anything but
/// "C", "POSIX", "ucs_basic"): the shards would sort and compare by it.
pub(super) fn foreign_collation(v: &Value) -> Option<String> {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let Some(c) = map.get("CollateClause") {
                    let name = c["collname"]
                        .as_array()
                        .and_then(|parts| parts.last())
                        .and_then(|p| p["node"]["String"]["sval"].as_str())
                        .unwrap_or_default();
                    if !matches!(name, "C" | "POSIX" | "ucs_basic") {
                        return Some(name.to_string());
                    }
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    None
}
