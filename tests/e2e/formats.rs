//! Every format and codec through every command, on real servers: plain
//! SQL under gzip, zstd or nothing, and pg_dump's custom archive and
//! directory format restored with `pg_restore --jobs`. Round trips compare as the pagila round trip
//! does (schema, per-table hashes, sequences, large objects); refusals leave
//! the target as it was.

use std::collections::BTreeMap;

use e2e::{DB, PgServer, S3Server, files_in, json_of, show};

use crate::restore::{fingerprint, load_pagila};

/// A table of 20 000 rows, `t`.
const TABLE_T: &str = "CREATE TABLE t (id int PRIMARY KEY, s text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g";

/// What a restored pagila must equal: schema, tables, sequences, large objects.
fn same_database(pg: &PgServer, a: &str, b: &str) {
    let (schema_a, tables_a) = fingerprint(pg, a);
    let (schema_b, tables_b) = fingerprint(pg, b);
    assert!(tables_a.len() > 20, "{tables_a:?}");
    assert_eq!(tables_a, tables_b, "{b}: table contents differ");
    assert_eq!(schema_a, schema_b, "{b}: schemas differ");
    let seq = "SELECT last_value FROM public.actor_actor_id_seq";
    assert_eq!(pg.psql(b, seq), pg.psql(a, seq));
    let blobs = "SELECT count(*) || ':' || md5(string_agg(encode(lo_get(oid), 'hex'), ',' ORDER BY md5(lo_get(oid)))) FROM pg_largeobject_metadata";
    assert_eq!(pg.psql(b, blobs), pg.psql(a, blobs), "{b}: large objects");
    assert!(pg.psql(a, blobs).starts_with("2:"));
}

#[test]
fn pagila_round_trips_through_every_format_and_codec() {
    let pg = PgServer::start(15);
    pg.create_db("pagila");
    load_pagila(&pg, "pagila");
    pg.psql("pagila", "SELECT lo_from_bytea(0, convert_to(repeat('large object ', 5000), 'UTF8')); SELECT lo_from_bytea(0, '\\x00ff00ff'::bytea)");
    let x = crate::xtask();
    let env = pg.xtask_env("pagila");
    let cases: [(&[&str], &str); 7] = [
        (&["--compress", "zstd"], ".sql.zst"),
        (&["--compress", "zstd:19", "--jobs", "1"], ".sql.zst"),
        (&["--compress", "none"], ".sql"),
        (&["--format", "custom"], ".dump"),
        (&["--format", "custom", "--compress", "none"], ".dump"),
        (&["--format", "directory", "--jobs", "2"], ".dir"),
        (&["--format", "directory", "--compress", "none"], ".dir"),
    ];
    let mut files = Vec::new();
    for (i, (flags, extension)) in cases.iter().enumerate() {
        let mut args = vec!["db-backup", "--json", "--no-prune", "--verify"];
        args.extend_from_slice(flags);
        let out = x.run(&args, &env);
        assert!(out.status.success(), "{flags:?}: {}", show(&out));
        let result = json_of(&out);
        let meta = &result["meta"];
        let file = meta["file"].as_str().unwrap().to_string();
        assert!(file.ends_with(extension), "{file}");
        assert_eq!(meta["verification"]["ok"], true, "{meta}");
        assert!(meta["tables"]["public.rental"].as_u64().unwrap() > 16_000);
        let format = match *extension {
            ".dump" => "custom",
            ".dir" => "directory",
            _ => "plain",
        };
        assert_eq!(meta["format"], format);

        let target = format!("pagila_{i}");
        let out = x.run(
            &["db-restore", &file, "--target-db", &target, "--json"],
            &env,
        );
        assert!(out.status.success(), "{flags:?}: {}", show(&out));
        same_database(&pg, "pagila", &target);
        files.push(file);
    }
    // sha256sum -c accepts every set, db-verify checks every file whole, and
    // db-list shows them all.
    e2e::assert_sha256sum_passes(&x.backup_dir());
    let out = x.run(&["db-verify", "--all", "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let verified = json_of(&out);
    let rows = |i: usize| verified["verified"][i]["tables"]["public.rental"].clone();
    for i in 0..files.len() {
        assert_eq!(verified["verified"][i]["ok"], true, "{verified}");
        assert_eq!(
            rows(i),
            rows(0),
            "row counts are read alike from every format"
        );
    }
    let out = x.run(&["db-list", "--json"], &env);
    let listed = json_of(&out);
    assert_eq!(listed["backups"].as_array().unwrap().len(), files.len());

    // A directory backup is pg_dump's files, each one in the manifest.
    let directory = &files[5];
    let manifest =
        std::fs::read_to_string(x.backup_dir().join(format!("{directory}.sha256"))).unwrap();
    let on_disk = std::fs::read_dir(x.backup_dir().join(directory))
        .unwrap()
        .count();
    assert_eq!(manifest.lines().count(), on_disk, "{manifest}");
    assert!(
        manifest.contains(&format!("{directory}/toc.dat")),
        "{manifest}"
    );

    // --table from a custom archive and from a directory: the same
    // dependency-aware selection.
    for (archive, films) in [(&files[3], "films"), (directory, "films_dir")] {
        let out = x.run(
            &[
                "db-restore",
                archive,
                "--target-db",
                films,
                "--table",
                "public.film",
            ],
            &env,
        );
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(
            pg.table_rows(films, "public.film"),
            pg.table_rows("pagila", "public.film")
        );
        let indexes = "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename = 'film'";
        assert_eq!(pg.psql(films, indexes), pg.psql("pagila", indexes));
        assert_eq!(
            pg.psql(
                films,
                "SELECT count(*) FROM pg_tables WHERE tablename = 'rental'"
            ),
            "0"
        );
    }

    // A clone from a directory backup masks the rows as from any other backup.
    std::fs::write(
        x.root.path().join("mask.toml"),
        "[mask]\n\"public.customer.email\" = \"email\"\n",
    )
    .unwrap();
    let mut clone_env = env.clone();
    clone_env.insert("BACKUP_MASK_SALT".into(), "a salt".into());
    let mask = x.root.path().join("mask.toml");
    let out = x.run(
        &[
            "db-clone",
            "--from",
            directory,
            "--to",
            "masked",
            "--mask",
            mask.to_str().unwrap(),
            "--yes",
        ],
        &clone_env,
    );
    assert!(out.status.success(), "{}", show(&out));
    let original: String = pg.psql(
        "pagila",
        "SELECT string_agg(email, ',' ORDER BY customer_id) FROM public.customer",
    );
    let masked: String = pg.psql(
        "masked",
        "SELECT string_agg(email, ',' ORDER BY customer_id) FROM public.customer",
    );
    assert_eq!(
        original.split(',').count(),
        masked.split(',').count(),
        "every customer is there"
    );
    assert!(
        original
            .split(',')
            .zip(masked.split(','))
            .all(|(a, b)| a != b),
        "no email survived the mask"
    );
}

/// The target's rows, and the databases of the server.
fn state(pg: &PgServer) -> String {
    format!(
        "{}|{}",
        pg.psql(
            DB,
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database"
        ),
        pg.table_rows(DB, "t")
    )
}

#[test]
fn damaged_archives_and_streams_are_refused_with_nothing_touched() {
    let pg = PgServer::start(15);
    pg.psql(DB, TABLE_T);
    // Names the server's row count must quote, an inheritance parent with
    // rows of its own, and a partitioned table (its rows are its partitions').
    pg.psql(
        DB,
        r#"CREATE SCHEMA "we.ird"; CREATE TABLE "we.ird"."Ordér ""x""" ("select" int);
        INSERT INTO "we.ird"."Ordér ""x""" SELECT g FROM generate_series(1, 7) g;
        CREATE TABLE parent (id int); CREATE TABLE child () INHERITS (parent);
        INSERT INTO parent VALUES (1), (2); INSERT INTO child VALUES (3);
        CREATE TABLE part (id int) PARTITION BY RANGE (id);
        CREATE TABLE part_low PARTITION OF part FOR VALUES FROM (0) TO (100);
        INSERT INTO part VALUES (1), (2), (3);"#,
    );
    let x = crate::xtask();
    let env = pg.xtask_env(DB);
    let refused = |args: &[&str], says: &str| {
        let before = state(&pg);
        let out = x.run(args, &env);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "expected '{says}' in: {err}");
        assert_eq!(state(&pg), before, "a refused restore changed something");
    };
    let dir = x.backup_dir();
    for flags in [["--format", "custom"], ["--compress", "zstd"]] {
        let mut args = vec!["db-backup", "--json", "--no-prune"];
        args.extend_from_slice(&flags);
        let out = x.run(&args, &env);
        assert!(out.status.success(), "{}", show(&out));
        let file = json_of(&out)["meta"]["file"].as_str().unwrap().to_string();
        let path = dir.join(&file);
        let pristine = std::fs::read(&path).unwrap();
        let restore = ["db-restore", file.as_str(), "--yes"];

        // Whole, it restores (a custom archive with pg_restore --jobs: the
        // server counts the rows it took, under those names, without falling
        // back to a second read).
        let out = x.run(&restore, &env);
        assert!(out.status.success(), "{}", show(&out));
        assert!(!show(&out).contains("did not count"), "{}", show(&out));
        let rows = r#"SELECT (SELECT count(*) FROM t) || ',' || (SELECT count(*) FROM ONLY parent)
            || ',' || (SELECT count(*) FROM part) || ',' || (SELECT count(*) FROM "we.ird"."Ordér ""x""")"#;
        assert_eq!(pg.psql(DB, rows), "20000,2,3,7");
        // .meta's row counts changed, its checksums intact: refused, whichever
        // road the restore takes.
        let meta_path = dir.join(format!("{file}.meta"));
        let meta_text = std::fs::read_to_string(&meta_path).unwrap();
        let mut meta: serde_json::Value = serde_json::from_str(&meta_text).unwrap();
        meta["tables"]["public.t"] = 19_999.into();
        std::fs::write(&meta_path, meta.to_string()).unwrap();
        refused(
            &restore,
            "the row counts in .meta disagree with the dump's data",
        );
        std::fs::write(&meta_path, &meta_text).unwrap();

        let mut flipped = pristine.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x55;
        std::fs::write(&path, &flipped).unwrap();
        refused(&restore, "checksum mismatch");
        let out = x.run(&["db-verify", &file], &env);
        assert_eq!(out.status.code(), Some(3), "{}", show(&out));

        // Cut short, with sidecars rewritten to match: the archive or the
        // stream itself is what refuses.
        let cut = &pristine[..pristine.len() * 2 / 3];
        std::fs::write(&path, cut).unwrap();
        let sha = std::process::Command::new("sha256sum")
            .arg(&file)
            .current_dir(&dir)
            .output()
            .unwrap()
            .stdout;
        std::fs::write(dir.join(format!("{file}.sha256")), &sha).unwrap();
        let meta_path = dir.join(format!("{file}.meta"));
        let mut meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
        meta["sha256"] = String::from_utf8_lossy(&sha[..64]).into_owned().into();
        meta["size_bytes"] = cut.len().into();
        std::fs::write(&meta_path, meta.to_string()).unwrap();
        refused(&restore, "refusing to restore");
        let out = x.run(&["db-verify", &file], &env);
        assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    }
    // A directory backup: a flipped byte in one of its files, a file gone,
    // a file added, a manifest that disagrees with .meta, and a file cut
    // short with both sidecars rewritten to match.
    let out = x.run(
        &["db-backup", "--json", "--no-prune", "--format", "directory"],
        &env,
    );
    assert!(out.status.success(), "{}", show(&out));
    let file = json_of(&out)["meta"]["file"].as_str().unwrap().to_string();
    let restore = ["db-restore", file.as_str(), "--yes"];
    let backup = dir.join(&file);
    let data = std::fs::read_dir(&backup)
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    let data_name = data.file_name().unwrap().to_string_lossy().into_owned();
    assert_ne!(data_name, "toc.dat");
    let pristine = std::fs::read(&data).unwrap();
    let manifest_path = dir.join(format!("{file}.sha256"));
    let manifest = std::fs::read_to_string(&manifest_path).unwrap();
    let mut flipped = pristine.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    std::fs::write(&data, &flipped).unwrap();
    refused(&restore, "checksum mismatch");
    std::fs::remove_file(&data).unwrap();
    refused(&restore, &format!("{file}/{data_name} is missing"));
    std::fs::write(&data, &pristine).unwrap();
    std::fs::write(backup.join("9999.dat.gz"), b"stray").unwrap();
    refused(&restore, "is not in the manifest");
    std::fs::remove_file(backup.join("9999.dat.gz")).unwrap();
    let other = manifest.replacen(&manifest[..64], &"0".repeat(64), 1);
    std::fs::write(&manifest_path, &other).unwrap();
    refused(&restore, "one of them was changed");
    let out = x.run(&["db-verify", &file], &env);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    // Cut short, the manifest and .meta rewritten to match: pg_restore's read refuses it.
    let cut = &pristine[..pristine.len() / 2];
    std::fs::write(&data, cut).unwrap();
    let line = std::process::Command::new("sha256sum")
        .arg(format!("{file}/{data_name}"))
        .current_dir(&dir)
        .output()
        .unwrap()
        .stdout;
    let line = String::from_utf8(line).unwrap();
    let rewritten: String = manifest
        .lines()
        .map(|l| {
            if l.ends_with(&format!("/{data_name}")) {
                line.clone()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&manifest_path, &rewritten).unwrap();
    let meta_path = dir.join(format!("{file}.meta"));
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    let digest = std::process::Command::new("sha256sum")
        .arg(&manifest_path)
        .output()
        .unwrap()
        .stdout;
    meta["sha256"] = String::from_utf8_lossy(&digest[..64]).into_owned().into();
    let size = meta["size_bytes"].as_u64().unwrap() - (pristine.len() - cut.len()) as u64;
    meta["size_bytes"] = size.into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    e2e::assert_sha256sum_passes(&dir.join("..").join(dir.file_name().unwrap()));
    refused(&restore, "refusing to restore");
    let out = x.run(&["db-verify", &file], &env);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));

    // A custom archive whose row counts were changed in both sidecars.
    let out = x.run(
        &["db-backup", "--json", "--no-prune", "--format", "custom"],
        &env,
    );
    let file = json_of(&out)["meta"]["file"].as_str().unwrap().to_string();
    let meta_path = dir.join(format!("{file}.meta"));
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["tables"]["public.t"] = 5.into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    refused(&["db-restore", &file, "--yes"], "row counts");
    // zstd inside a custom archive needs pg_dump 16: one line, nothing written.
    if e2e::host_pg_dump_major() < 16 {
        let before = files_in(&dir);
        let out = x.run(
            &["db-backup", "--format", "custom", "--compress", "zstd"],
            &env,
        );
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("pg_dump 16"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert_eq!(files_in(&dir), before);
    }
    // Bad settings are one line each.
    for (key, value, says) in [
        (
            "BACKUP_COMPRESSION",
            "brotli",
            "unknown compression 'brotli'",
        ),
        (
            "BACKUP_COMPRESSION",
            "zstd:40",
            "zstd level 40 is out of range",
        ),
        ("BACKUP_FORMAT", "tar", "unknown format 'tar'"),
        ("BACKUP_JOBS", "0", "BACKUP_JOBS '0' is not valid"),
    ] {
        let mut bad = env.clone();
        bad.insert(key.into(), value.into());
        let out = x.run(&["db-backup"], &bad);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

#[test]
fn remote_custom_and_directory_backups_are_downloaded_for_pg_restore_and_the_copies_removed() {
    let pg = PgServer::start(15);
    pg.psql(DB, TABLE_T);
    let s3 = S3Server::start();
    let x = crate::xtask();
    let tmp = tempfile::tempdir().unwrap();
    let mut env: BTreeMap<String, String> = pg.xtask_env(DB);
    env.extend(s3.env());
    env.insert("TMPDIR".into(), tmp.path().display().to_string());
    let before = pg.table_rows(DB, "t");
    let left_in_tmp = || std::fs::read_dir(tmp.path()).unwrap().count();
    let mut dirs_in_bucket = Vec::new();

    for (format, extension) in [("custom", ".dump"), ("directory", ".dir")] {
        let out = x.run(
            &["db-backup", "--json", "--remote-only", "--format", format],
            &env,
        );
        assert!(out.status.success(), "{}", show(&out));
        let file = json_of(&out)["meta"]["file"].as_str().unwrap().to_string();
        assert!(file.ends_with(extension));
        let objects = s3.objects();
        match format {
            "custom" => assert!(objects.contains(&file), "{objects:?}"),
            _ => assert!(s3.objects_in(&file).contains(&"toc.dat".to_string())),
        }
        assert!(objects.contains(&format!("{file}.sha256")), "{objects:?}");
        if format == "directory" {
            dirs_in_bucket.push(file.clone());
        }
        assert_eq!(left_in_tmp(), 0, "{:?}", files_in(tmp.path()));

        pg.psql(DB, "DELETE FROM t WHERE id > 10");
        let out = x.run(&["db-restore", "--remote", "--latest", "--yes"], &env);
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(pg.table_rows(DB, "t"), before);
        assert_eq!(left_in_tmp(), 0, "the downloaded copy is removed");
        let out = x.run(&["db-verify", "--remote", "--latest"], &env);
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(left_in_tmp(), 0, "the downloaded copy is removed");
    }
    // A local directory backup's off-site copy: one object per file, and
    // the listing shows it whole with its checksums recorded.
    let out = x.run(
        &["db-backup", "--json", "--format", "directory", "--no-prune"],
        &env,
    );
    assert!(out.status.success(), "{}", show(&out));
    let result = json_of(&out);
    assert!(result["uploaded"].is_string(), "{result}");
    let file = result["meta"]["file"].as_str().unwrap().to_string();
    let local_files = std::fs::read_dir(x.backup_dir().join(&file))
        .unwrap()
        .count();
    let uploaded = s3.objects_in(&file).len();
    assert_eq!(uploaded, local_files);
    let out = x.run(&["db-list", "--remote", "--json"], &env);
    let listed = json_of(&out);
    let row = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["file"] == file.as_str())
        .unwrap_or_else(|| panic!("{listed}"))
        .clone();
    assert_eq!(row["checksum"], "recorded", "{row}");
    // Ten days on, db-prune --remote takes the older sets, every object of
    // the older directory backup with them, and keeps the newest whole.
    let older_dir = dirs_in_bucket.first().unwrap().clone();
    assert!(s3.objects_in(&older_dir).len() > 1);
    let later = e2e::days_later(&env, 10);
    let out = x.run(&["db-prune", "--remote", "--json"], &later);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(json_of(&out)["deleted"], 2, "{}", show(&out));
    assert!(
        s3.objects_in(&older_dir).is_empty(),
        "{:?}",
        s3.objects_in(&older_dir)
    );
    assert_eq!(s3.objects_in(&file).len(), local_files);
    assert_eq!(s3.objects().len(), 2, "{:?}", s3.objects());
}

#[test]
fn compose_route_writes_and_restores_zstd_custom_and_directory_backups_of_postgres_17() {
    let p = crate::compose::Project::new();
    p.up(&[]);
    p.psql(
        "app",
        "app",
        &format!("{TABLE_T}; SELECT lo_from_bytea(0, '\\x00ff'::bytea)"),
    );
    let fingerprint = "SELECT count(*) || ':' || md5(string_agg(s, ',' ORDER BY id)) || ':' || (SELECT count(*) FROM pg_largeobject_metadata) FROM t";
    let before = p.psql("app", "app", fingerprint);
    for flags in [
        ["--format", "custom", "--compress", "zstd:5"],
        ["--format", "plain", "--compress", "zstd:5"],
        ["--format", "directory", "--compress", "zstd:5"],
    ] {
        let mut args = vec!["db-backup", "--json", "--no-prune"];
        args.extend_from_slice(&flags);
        let out = p.run(&args, &[]);
        assert!(out.status.success(), "{}", show(&out));
        let meta = &json_of(&out)["meta"];
        assert_eq!(meta["via"], "compose");
        assert_eq!(meta["compression"]["algorithm"], "zstd");
        assert_eq!(meta["tables"]["public.t"], 20000, "{meta}");
        let file = meta["file"].as_str().unwrap().to_string();
        if flags[1] == "directory" {
            // pg_dump 17 wrote zstd files in the service; they came out whole.
            let dir = p.x.backup_dir().join(&file);
            let names: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(names.iter().any(|n| n.ends_with(".dat.zst")), "{names:?}");
            e2e::assert_sha256sum_passes(&p.x.backup_dir());
        }
        let out = p.run(&["db-verify", &file], &[]);
        assert!(out.status.success(), "{}", show(&out));
        p.psql("app", "app", "DELETE FROM t WHERE id > 5");
        let out = p.run(&["db-restore", &file, "--yes", "--drop-previous"], &[]);
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(p.psql("app", "app", fingerprint), before);
    }
}

#[test]
fn pagila_of_postgres_17_round_trips_through_a_directory_backup_on_the_compose_route() {
    let p = crate::compose::Project::new();
    p.up(&[]);
    let _ = p.compose(&[
        "exec",
        "-T",
        "db",
        "psql",
        "-U",
        "app",
        "-d",
        "app",
        "-c",
        "CREATE ROLE postgres",
    ]);
    p.psql("app", "app", "CREATE DATABASE pagila");
    for file in ["pagila-schema.sql.gz", "pagila-data.sql.gz"] {
        let gz = std::fs::File::open(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures/pagila")
                .join(file),
        )
        .unwrap();
        let mut sql = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut sql).unwrap();
        p.psql_script("app", "pagila", &sql);
    }
    p.psql("app", "pagila", "SELECT lo_from_bytea(0, convert_to(repeat('large object ', 5000), 'UTF8')); SELECT lo_from_bytea(0, '\\x00ff00ff'::bytea)");
    let out = p.run(
        &[
            "db-backup",
            "-d",
            "pagila",
            "--json",
            "--no-prune",
            "--verify",
            "--format",
            "directory",
            "--jobs",
            "2",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", show(&out));
    let meta = &json_of(&out)["meta"];
    assert_eq!(meta["via"], "compose");
    assert_eq!(meta["verification"]["ok"], true, "{meta}");
    assert!(meta["pg_dump_version"].as_str().unwrap().starts_with("17"));
    let file = meta["file"].as_str().unwrap().to_string();
    e2e::assert_sha256sum_passes(&p.x.backup_dir());

    let out = p.run(
        &["db-restore", &file, "--target-db", "pagila_copy", "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", show(&out));
    let (schema_a, tables_a) = p.fingerprint("app", "pagila");
    let (schema_b, tables_b) = p.fingerprint("app", "pagila_copy");
    assert!(tables_a.len() > 20, "{tables_a:?}");
    assert_eq!(tables_a, tables_b, "table contents differ");
    assert_eq!(schema_a, schema_b, "schemas differ");
    let blobs = "SELECT count(*) || ':' || md5(string_agg(encode(lo_get(oid), 'hex'), ',' ORDER BY md5(lo_get(oid)))) FROM pg_largeobject_metadata";
    assert_eq!(
        p.psql("app", "pagila_copy", blobs),
        p.psql("app", "pagila", blobs)
    );
    let seq = "SELECT last_value FROM public.actor_actor_id_seq";
    assert_eq!(
        p.psql("app", "pagila_copy", seq),
        p.psql("app", "pagila", seq)
    );

    // --table from it, on the compose route too.
    let out = p.run(
        &[
            "db-restore",
            &file,
            "--target-db",
            "films",
            "--table",
            "public.film",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        p.psql("app", "films", "SELECT count(*) FROM public.film"),
        p.psql("app", "pagila", "SELECT count(*) FROM public.film")
    );
    // No temporary directory is left in the service.
    let out = p.compose(&[
        "exec",
        "-T",
        "db",
        "sh",
        "-c",
        "ls -A /tmp | grep -c '^tmp\\.' || true",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "{}",
        show(&out)
    );
}

/// A directory in front of PATH whose `pg_dump` says it is `version` and
/// whose `pg_restore` runs the real one, then the SQL in `after.sql` (when
/// there is one) in the database it restored into: what a pg_restore that loses
/// or adds rows leaves behind.
fn tools_that_change_the_load(dir: &std::path::Path, version: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let real = |tool: &str| {
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let after = dir.join("after.sql");
    let scripts = [
        (
            "pg_dump",
            format!(
                "#!/bin/sh\n[ \"$1\" = --version ] && {{ echo 'pg_dump (PostgreSQL) {version}'; exit 0; }}\nexec '{}' \"$@\"\n",
                real("pg_dump")
            ),
        ),
        (
            "pg_restore",
            format!(
                "#!/bin/sh\n'{}' \"$@\" || exit $?\nfor a in \"$@\"; do case \"$a\" in --dbname=*) db=\"${{a#--dbname=}}\";; esac; done\n\
                 [ -n \"$db\" ] && [ -f '{}' ] || exit 0\nexec '{}' -qX -v ON_ERROR_STOP=1 -d \"$db\" -f '{}'\n",
                real("pg_restore"),
                after.display(),
                real("psql"),
                after.display()
            ),
        ),
    ];
    for (tool, script) in scripts {
        let path = dir.join(tool);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    after
}

#[test]
fn a_parallel_restore_that_lost_rows_is_refused_and_one_with_more_is_not() {
    let pg = PgServer::start(15);
    pg.psql(DB, TABLE_T);
    pg.psql(
        DB,
        "CREATE TABLE settings (k text PRIMARY KEY); INSERT INTO settings VALUES ('a'), ('b')",
    );
    if e2e::host_pg_dump_major() > 15 {
        // Every release of 16 and later is after the fix: nothing to pretend.
        eprintln!("skipped: the host's pg_dump is newer than 15");
        return;
    }
    let x = crate::xtask();
    let env = pg.xtask_env(DB);
    let mut files = Vec::new();
    for format in ["custom", "directory"] {
        let out = x.run(
            &["db-backup", "--json", "--no-prune", "--format", format],
            &env,
        );
        assert!(out.status.success(), "{}", show(&out));
        files.push(json_of(&out)["meta"]["file"].as_str().unwrap().to_string());
    }
    // A pg_restore of before May 2023, whose jobs could truncate rows
    // another job had loaded while its own COPY counts stayed whole: the
    // rows the server holds are counted, never taken from its tally.
    let spy = x.root.path().join("tools");
    let after = tools_that_change_the_load(&spy, "15.2");
    let mut env = env;
    env.insert(
        "PATH".into(),
        format!("{}:{}", spy.display(), std::env::var("PATH").unwrap()),
    );
    pg.psql(DB, "UPDATE t SET s = 'changed' WHERE id = 1");
    std::fs::write(&after, "DELETE FROM t WHERE id <= 5;").unwrap();
    for file in &files {
        let before = state(&pg);
        let out = x.run(&["db-restore", file, "--yes", "--jobs", "2"], &env);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("the target database was not touched")
                && err.contains("pg_restore left fewer rows than the backup holds (public.t 19995 of 20000): try again with --jobs 1"),
            "{err}"
        );
        assert_eq!(state(&pg), before, "a refused restore changed something");
        assert_eq!(pg.psql(DB, "SELECT s FROM t WHERE id = 1"), "changed");
        // The backup is whole: never marked failed.
        let out = x.run(&["db-verify", file], &env);
        assert!(out.status.success(), "{}", show(&out));
    }
    // A table the server will not count (here a view under its name) leaves
    // the others counted one by one; a table gone holds none of its rows.
    let refused_saying = |sql: &str, says: &str| {
        std::fs::write(&after, sql).unwrap();
        let out = x.run(&["db-restore", &files[0], "--yes", "--jobs", "2"], &env);
        assert_eq!(out.status.code(), Some(1), "{}", show(&out));
        assert!(show(&out).contains(says), "{}", show(&out));
        show(&out)
    };
    let out = refused_saying(
        "DELETE FROM t WHERE id <= 5; ALTER TABLE settings RENAME TO s2; CREATE VIEW settings AS SELECT * FROM s2;",
        "pg_restore left fewer rows than the backup holds (public.t 19995 of 20000)",
    );
    assert!(
        out.contains(
            "the server did not count every restored table (public.settings is not a table here)"
        ),
        "{out}"
    );
    refused_saying(
        "DROP TABLE settings;",
        "pg_restore left fewer rows than the backup holds (public.settings 0 of 2)",
    );
    std::fs::write(&after, "DELETE FROM t WHERE id <= 5;").unwrap();
    // Without .meta (a file made elsewhere) the whole read beside the load
    // is what the rows are counted against.
    let meta = x.backup_dir().join(format!("{}.meta", files[0]));
    let aside = x.root.path().join("aside.meta");
    std::fs::rename(&meta, &aside).unwrap();
    let out = x.run(&["db-restore", &files[0], "--yes", "--jobs", "2"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        show(&out)
            .contains("pg_restore left fewer rows than the backup holds (public.t 19995 of 20000)"),
        "{}",
        show(&out)
    );
    std::fs::rename(&aside, &meta).unwrap();
    // More rows than the backup's, as an extension's configuration table
    // has after CREATE EXTENSION: restored.
    std::fs::write(
        &after,
        "INSERT INTO settings VALUES ('from the extension');",
    )
    .unwrap();
    for file in &files {
        let out = x.run(&["db-restore", file, "--yes", "--jobs", "2"], &env);
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(pg.psql(DB, "SELECT count(*) FROM t"), "20000");
        assert_eq!(pg.psql(DB, "SELECT count(*) FROM settings"), "3");
    }
}
