//! The command line itself: needs no database.

use e2e::show;

fn run(args: &[&str]) -> std::process::Output {
    crate::xtask().run(args, &Default::default())
}

#[test]
fn help_lists_every_task() {
    let out = run(&["--help"]);
    assert!(out.status.success(), "{}", show(&out));
    insta::assert_snapshot!("help", String::from_utf8_lossy(&out.stdout));
    // `cargo xtask` alone prints the same list and succeeds.
    let bare = run(&[]);
    assert!(bare.status.success(), "{}", show(&bare));
    assert_eq!(bare.stdout, out.stdout);
}

#[test]
fn db_backup_help() {
    let out = run(&["db-backup", "--help"]);
    assert!(out.status.success(), "{}", show(&out));
    insta::assert_snapshot!("db-backup-help", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn every_task_help() {
    for task in [
        "db-prune",
        "db-restore",
        "db-list",
        "db-verify",
        "db-status",
        "db-clone",
        "db-up",
        "db-down",
        "db-psql",
    ] {
        let out = run(&[task, "--help"]);
        assert!(out.status.success(), "{}", show(&out));
        insta::assert_snapshot!(format!("{task}-help"), String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn bad_input_gets_one_clear_line() {
    let out = run(&["db-backup", "--type=hourly"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: invalid value 'hourly' for '--type <TYPE>'"),
        "{err}"
    );

    let x = crate::xtask();
    let env = [("POSTGRES_PORT".to_string(), "not-a-port".to_string())].into();
    let out = x.run(&["db-backup"], &env);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: POSTGRES_PORT 'not-a-port' is not a port number: use a number from 1 to 65535\n"
    );

    let env = [("BACKUP_COMPRESSION_LEVEL".to_string(), "11".to_string())].into();
    let out = x.run(&["db-backup"], &env);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: BACKUP_COMPRESSION_LEVEL '11' is not valid: use a number from 1 to 9\n"
    );
}

#[test]
fn dotenv_file_sits_below_the_environment() {
    // The .env of the workspace root names an unreachable port; the environment wins when set.
    let x = crate::xtask();
    std::fs::write(
        x.root.path().join(".env"),
        "POSTGRES_PORT=1\nPOSTGRES_HOST=127.0.0.1\nPGPASSWORD=from-dotenv\n",
    )
    .unwrap();
    let out = x.run(&["db-backup", "-v"], &Default::default());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("port: from .env"), "{err}");
    assert!(
        err.contains("cannot reach PostgreSQL at 127.0.0.1:1"),
        "{err}"
    );
    assert!(
        !err.contains("from-dotenv"),
        "the password never shows: {err}"
    );

    let env = [("POSTGRES_PORT".to_string(), "2".to_string())].into();
    let out = x.run(&["db-backup", "-v"], &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("port: from environment") && err.contains("127.0.0.1:2"),
        "{err}"
    );
}

#[test]
fn demo_runs_end_to_end_and_leaves_nothing_behind() {
    let leftovers = || {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("xtask-demo-"))
            .count()
    };
    let before = leftovers();
    let out = run(&["demo"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("demo passed"),
        "{}",
        show(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    for step in ["1/6", "2/6", "3/6", "4/6", "5/6", "6/6", "removed"] {
        assert!(err.contains(step), "step {step} missing: {err}");
    }
    assert_eq!(
        leftovers(),
        before,
        "the demo left files in the temp directory"
    );
}
