use super::*;

fn effects(sql: &str) -> Vec<Effect> {
    analyze(sql.as_bytes()).effects
}

fn set(name: &str) -> Effect {
    Effect::Set(name.into())
}

#[test]
fn plain_statements_have_no_effect_and_are_not_parsed() {
    for sql in [
        "select 1",
        "SELECT * FROM t WHERE x = 'set search_path'",
        "insert into t values (1)",
        "begin",
        "commit;",
        "notify chan, 'x'",
        "select pg_advisory_xact_lock(1)",
        "SET LOCAL search_path = a",
        "set transaction isolation level serializable",
        "create temp table t(x int) on commit drop",
        "declare c cursor for select 1",
        "select 'listen x; prepare p as select 1'",
        "do $$ begin perform 1; end $$",
        "-- set foo = 1\nselect 1",
        "select set_config('search_path', 'a', true)",
        "select temperature from readings",
        "explain select 1",
    ] {
        assert_eq!(effects(sql), vec![], "{sql}");
    }
    assert!(plainly_harmless(b"select 1"));
    assert!(plainly_harmless(b"  insert into t values (1);  "));
    assert!(!plainly_harmless(b"select 1; set x = 1"));
    assert!(!plainly_harmless(b"select pg_advisory_lock(1)"));
    assert!(!plainly_harmless(b"select 1;; x"));
    assert!(plainly_harmless(b"select 1;; \n"));
    assert!(!plainly_harmless(b"(select 1)"));
    assert!(!plainly_harmless(b"select * into temp t from x"));
}

#[test]
fn every_first_word_is_caught_in_any_case() {
    for w in FIRST_WORDS {
        let w = std::str::from_utf8(w).unwrap();
        for text in [format!("{w} x"), format!("  {} x", w.to_uppercase())] {
            assert!(!plainly_harmless(text.as_bytes()), "{text}");
        }
        assert!(plainly_harmless(format!("{w}x y").as_bytes()), "{w}x");
    }
    assert!(plainly_harmless(b"deallocatex"));
}

#[test]
fn words_of_a_session_word_length_are_not_taken_for_it() {
    for w in [
        "sex",
        "resex",
        "listex",
        "creatx",
        "preparx",
        "unlistex",
        "deallocata",
    ] {
        let (n, p) = lead_word(w.as_bytes());
        assert!(!session_first_word(w.as_bytes(), n, p), "{w}");
    }
    for w in FIRST_WORDS {
        let (n, p) = lead_word(w);
        assert!(session_first_word(w, n, p));
    }
}

#[test]
fn markers_are_found_in_any_eight_byte_step() {
    // The marker at every offset, so that it falls in each place of a step and across
    // two steps.
    for pad in 0..17 {
        let sp = " ".repeat(pad);
        let text = format!("select {sp}pg_advisory_lock(1)");
        assert!(!plainly_harmless(text.as_bytes()), "{text}");
        let text = format!("select {sp}* INTO TEMP t from x");
        assert!(!plainly_harmless(text.as_bytes()), "{text}");
        let text = format!("select {sp}1; select 2");
        assert!(!plainly_harmless(text.as_bytes()), "{text}");
        let text = format!("select {sp}into_x, temperature from t");
        assert!(!plainly_harmless(text.as_bytes()), "{text}");
        let text = format!("select {sp}count(*) from t;  ");
        assert!(plainly_harmless(text.as_bytes()), "{text}");
    }
}

#[test]
fn white_space_after_the_last_semicolon_is_harmless() {
    for ws in [" ", "\t", "\n", "\r", "\x0c"] {
        assert!(
            plainly_harmless(format!("select 1;{ws};{ws}").as_bytes()),
            "{ws:?}"
        );
        assert!(
            !plainly_harmless(format!("select 1;{ws}x").as_bytes()),
            "{ws:?}"
        );
    }
    assert!(!plainly_harmless(b"select 1; (select 2)"));
}

#[test]
fn session_settings_are_reported_by_name() {
    assert_eq!(effects("SET search_path TO a, b"), vec![set("search_path")]);
    assert_eq!(
        effects("set session TimeZone = 'UTC'"),
        vec![set("timezone")]
    );
    assert_eq!(effects("SET work_mem TO DEFAULT"), vec![set("work_mem")]);
    assert_eq!(effects("reset search_path"), vec![set("search_path")]);
    assert_eq!(effects("RESET ALL"), vec![Effect::ResetAll]);
    assert_eq!(
        effects("DISCARD ALL"),
        vec![Effect::ResetAll, Effect::DiscardAll]
    );
    assert_eq!(
        effects("select 1; set \"my.var\" = 'x'"),
        vec![set("my.var")]
    );
    assert_eq!(
        effects("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
        vec![set("default_transaction_read_only")]
    );
    assert_eq!(effects("SET transaction_read_only = on"), vec![]);
    assert_eq!(
        effects("select set_config('search_path', 'a', false)"),
        vec![set("search_path")]
    );
    assert_eq!(
        effects("select pg_catalog.set_config($1, 'a', false)"),
        vec![Effect::Unsafe(Unsafe::DynamicSetConfig)]
    );
    assert_eq!(effects("RESET ROLE"), vec![]);
    assert_eq!(
        effects("SET ROLE admin"),
        vec![Effect::Unsafe(Unsafe::Role)]
    );
    assert_eq!(
        effects("set session authorization bob"),
        vec![Effect::Unsafe(Unsafe::Role)]
    );
    assert_eq!(effects("SET LOCAL ROLE admin"), vec![]);
}

#[test]
fn prepared_statements_carry_the_place_of_their_name() {
    let sql = "PREPARE \"Q1\" (int) AS SELECT $1; EXECUTE \"Q1\"(2); deallocate prepare \"Q1\"; DEALLOCATE ALL";
    let at = |s: &str| {
        let i = sql.rfind(s).unwrap();
        i..i + s.len()
    };
    let found = effects(sql);
    let q1: Vec<usize> = sql.match_indices("\"Q1\"").map(|(i, _)| i).collect();
    assert_eq!(
        found,
        vec![
            Effect::Prepare {
                name: "Q1".into(),
                at: q1[0]..q1[0] + 4
            },
            Effect::Execute {
                name: "Q1".into(),
                at: q1[1]..q1[1] + 4
            },
            Effect::Deallocate {
                name: Some("Q1".into()),
                at: q1[2]..q1[2] + 4
            },
            Effect::Deallocate {
                name: None,
                at: at("ALL")
            },
        ]
    );
    let sql = "explain (costs off) execute p1(1)";
    assert_eq!(
        effects(sql),
        vec![Effect::Execute {
            name: "p1".into(),
            at: 28..30
        }]
    );
    let sql = "create table t2 as execute p2";
    assert_eq!(
        effects(sql),
        vec![Effect::Execute {
            name: "p2".into(),
            at: 27..29
        }]
    );
}

#[test]
fn listen_and_unlisten() {
    assert_eq!(effects("LISTEN chan"), vec![Effect::Listen("chan".into())]);
    assert_eq!(
        effects("unlisten \"Chan\""),
        vec![Effect::Unlisten(Some("Chan".into()))]
    );
    assert_eq!(effects("UNLISTEN *"), vec![Effect::Unlisten(None)]);
}

#[test]
fn state_that_cannot_be_carried_is_flagged() {
    for (sql, what) in [
        ("create temporary table t(x int)", Unsafe::TempObject),
        (
            "create temp table t(x int) on commit delete rows",
            Unsafe::TempObject,
        ),
        ("create temp view v as select 1", Unsafe::TempObject),
        ("create temp sequence s", Unsafe::TempObject),
        ("create temp table t as select 1", Unsafe::TempObject),
        ("select 1 into temp t", Unsafe::TempObject),
        (
            "declare c cursor with hold for select 1",
            Unsafe::HoldCursor,
        ),
        ("select pg_advisory_lock(42)", Unsafe::SessionAdvisoryLock),
        (
            "select 1 from t where pg_catalog.pg_try_advisory_lock_shared(id)",
            Unsafe::SessionAdvisoryLock,
        ),
    ] {
        assert_eq!(effects(sql), vec![Effect::Unsafe(what)], "{sql}");
    }
    assert_eq!(effects("select pg_advisory_unlock(42)"), vec![]);
    assert_eq!(effects("create table t(x int)"), vec![]);
}

#[test]
fn text_in_another_encoding_keeps_its_byte_offsets() {
    // LATIN1 bytes (client_encoding = LATIN1).
    let sql = b"SET search_path = 'caf\xe9'; PREPARE p AS select '\xe9'";
    let a = analyze(sql);
    assert!(!a.utf8);
    assert_eq!(a.effects[0], set("search_path"));
    let Effect::Prepare { at, .. } = &a.effects[1] else {
        panic!("{:?}", a.effects)
    };
    assert_eq!(&sql[at.clone()], b"p");
    assert_eq!(analyze(b"select '\xe9'").effects, vec![]);
}

#[test]
fn unparsable_text_has_no_effect() {
    assert_eq!(effects("SET search_path TO"), vec![]);
    assert_eq!(effects("prepare"), vec![]);
}
