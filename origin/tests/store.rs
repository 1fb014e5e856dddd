//! The object stores keep the same contract: one conformance run against the filesystem store
//! and one against a real Garage S3 server, plus bounded failure when S3 is unreachable.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use cascade_origin::archive::store::{FsStore, ObjectKey, ObjectStore, S3Store, StoreError};
use cascade_testkit::Garage;

fn key(k: &str) -> ObjectKey {
    ObjectKey::new(k).unwrap()
}

fn keys(listed: Vec<ObjectKey>) -> Vec<String> {
    listed.into_iter().map(|k| k.as_str().to_owned()).collect()
}

/// The contract every [`ObjectStore`] keeps.
async fn conformance(store: &dyn ObjectStore) {
    let name = store.backend();
    // Binary data with every byte value, larger than one network buffer.
    let segment = Bytes::from((0..300_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    let init = Bytes::from_static(&[0, 0, 0, 0x18, b'f', b't', b'y', b'p', 0xff, 0xfe, 0x00]);

    // Put/get round trip.
    store
        .put(&key("live/abc/720p/1.m4s"), segment.clone(), "video/mp4")
        .await
        .unwrap();
    assert_eq!(
        store.get(&key("live/abc/720p/1.m4s")).await.unwrap(),
        Some(segment.clone()),
        "{name}"
    );

    // Overwrite replaces the whole object, even with a shorter one.
    store
        .put(&key("live/abc/720p/1.m4s"), init.clone(), "video/mp4")
        .await
        .unwrap();
    assert_eq!(
        store.get(&key("live/abc/720p/1.m4s")).await.unwrap(),
        Some(init.clone()),
        "{name}"
    );
    store
        .put(
            &key("live/abc/empty"),
            Bytes::new(),
            "application/octet-stream",
        )
        .await
        .unwrap();
    assert_eq!(
        store.get(&key("live/abc/empty")).await.unwrap(),
        Some(Bytes::new()),
        "{name}"
    );

    // Absent keys are None, including a "directory" of other objects.
    assert_eq!(
        store.get(&key("live/abc/720p/9.m4s")).await.unwrap(),
        None,
        "{name}"
    );
    assert_eq!(
        store.get(&key("nothing/here")).await.unwrap(),
        None,
        "{name}"
    );
    assert_eq!(
        store.get(&key("live/abc/720p")).await.unwrap(),
        None,
        "{name}"
    );

    for k in [
        "live/abc/720p/2.m4s",
        "live/abc/720p/10.m4s",
        "live/abc/480p/1.m4s",
        "live/abc/720p.m3u8",
        "live/abcd/720p/1.m4s",
        "live/abd/1.m4s",
        "vod/x/1.m4s",
    ] {
        store
            .put(&key(k), segment.slice(..1000), "video/mp4")
            .await
            .unwrap();
    }

    // Listing: only the prefix (not `live/abcd/`), sorted byte-wise.
    assert_eq!(
        keys(store.list("live/abc/720p/").await.unwrap()),
        [
            "live/abc/720p/1.m4s",
            "live/abc/720p/10.m4s",
            "live/abc/720p/2.m4s"
        ],
        "{name}"
    );
    assert_eq!(
        keys(store.list("live/abc/").await.unwrap()),
        [
            "live/abc/480p/1.m4s",
            "live/abc/720p.m3u8",
            "live/abc/720p/1.m4s",
            "live/abc/720p/10.m4s",
            "live/abc/720p/2.m4s",
            "live/abc/empty",
        ],
        "{name}"
    );
    let all = keys(store.list("").await.unwrap());
    assert_eq!(all.len(), 9, "{name}: {all:?}");
    assert!(all.is_sorted(), "{name}: {all:?}");
    assert!(store.list("nothing/").await.unwrap().is_empty(), "{name}");

    // Bad prefixes are refused, not retryable.
    for bad in ["live", "/live/", "../", "live//"] {
        let err = store.list(bad).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidKey { .. }) && !err.is_retryable(),
            "{name} {bad:?}: {err}"
        );
    }
    for bad in ["", "live", "/"] {
        let err = store.delete_prefix(bad).await.unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidKey { .. }),
            "{name} {bad:?}: {err}"
        );
    }

    // Deleting a prefix counts what it removed and spares everything else.
    assert_eq!(store.delete_prefix("live/abc/").await.unwrap(), 6, "{name}");
    assert!(store.list("live/abc/").await.unwrap().is_empty(), "{name}");
    assert_eq!(
        store.get(&key("live/abc/720p/2.m4s")).await.unwrap(),
        None,
        "{name}"
    );
    assert_eq!(
        keys(store.list("").await.unwrap()),
        ["live/abcd/720p/1.m4s", "live/abd/1.m4s", "vod/x/1.m4s"],
        "{name}"
    );
    assert_eq!(
        store
            .get(&key("live/abcd/720p/1.m4s"))
            .await
            .unwrap()
            .as_deref(),
        Some(&segment[..1000]),
        "{name}"
    );
    assert_eq!(store.delete_prefix("live/abc/").await.unwrap(), 0, "{name}");

    // The prefix can be written again after deletion.
    store
        .put(&key("live/abc/720p/1.m4s"), init.clone(), "video/mp4")
        .await
        .unwrap();
    assert_eq!(
        keys(store.list("live/abc/").await.unwrap()),
        ["live/abc/720p/1.m4s"],
        "{name}"
    );
    assert_eq!(store.delete_prefix("live/").await.unwrap(), 3, "{name}");
    assert_eq!(
        keys(store.list("").await.unwrap()),
        ["vod/x/1.m4s"],
        "{name}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::new(dir.path().join("objects")).unwrap();
    conformance(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_conformance_against_garage() {
    let garage = Garage::start().unwrap();
    let store = S3Store::new(&garage.storage_config());
    assert_eq!(store.backend(), "s3");
    conformance(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_keeps_content_types_and_deletes_many() {
    let garage = Garage::start().unwrap();
    let store = S3Store::new(&garage.storage_config());
    store
        .put(
            &key("vod/a/master.m3u8"),
            Bytes::from_static(b"#EXTM3U\n"),
            "application/vnd.apple.mpegurl",
        )
        .await
        .unwrap();
    let object = S3Store::new(&garage.storage_config())
        .client()
        .get_object()
        .bucket(garage.storage_config().bucket)
        .key("vod/a/master.m3u8")
        .send()
        .await
        .unwrap();
    assert_eq!(object.content_type(), Some("application/vnd.apple.mpegurl"));

    // More than one listing page and one DeleteObjects batch (1000 keys each).
    let count = 1_050;
    let mut puts = tokio::task::JoinSet::new();
    let store = std::sync::Arc::new(store);
    for i in 0..count {
        let store = store.clone();
        puts.spawn(async move {
            store
                .put(
                    &key(&format!("dvr/s/{i:05}.m4s")),
                    Bytes::from_static(b"x"),
                    "video/mp4",
                )
                .await
        });
        while puts.len() >= 32 {
            puts.join_next().await.unwrap().unwrap().unwrap();
        }
    }
    while let Some(put) = puts.join_next().await {
        put.unwrap().unwrap();
    }
    let listed = keys(store.list("dvr/s/").await.unwrap());
    assert_eq!(listed.len(), count);
    assert_eq!(listed[1000], "dvr/s/01000.m4s");
    assert_eq!(store.delete_prefix("dvr/").await.unwrap(), count as u64);
    assert!(store.list("dvr/").await.unwrap().is_empty());
    assert_eq!(keys(store.list("").await.unwrap()), ["vod/a/master.m3u8"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_errors_name_the_service_code() {
    let garage = Garage::start().unwrap();
    let mut config = garage.storage_config();
    config.secret_access_key = cascade_config::Secret::new("0".repeat(64));
    let err = S3Store::new(&config)
        .put(&key("a/b"), Bytes::from_static(b"x"), "text/plain")
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, StoreError::Backend { op: "put", .. }),
        "{err:?}"
    );
    assert!(message.contains("\"a/b\""), "{message}");
    assert!(
        message.contains("AccessDenied") || message.contains("403"),
        "{message}"
    );
    assert!(
        !message.contains(&"0".repeat(64)),
        "no secrets in errors: {message}"
    );

    let mut config = garage.storage_config();
    config.bucket = "no-such-bucket".into();
    let err = S3Store::new(&config).get(&key("a/b")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Backend { op: "get", .. }),
        "a missing bucket is not a missing object: {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_fails_fast_when_nothing_listens() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = cascade_config::S3StorageConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        access_key_id: "GKexample".into(),
        secret_access_key: cascade_config::Secret::new("secret"),
        ..Default::default()
    };
    let store = S3Store::new(&config);
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        store.put(&key("live/a/1.m4s"), Bytes::from_static(b"x"), "video/mp4"),
    )
    .await
    .expect("put must not hang")
    .unwrap_err();
    let elapsed = started.elapsed();
    assert!(err.is_retryable(), "{err}");
    assert!(
        matches!(err, StoreError::Backend { op: "put", .. }),
        "{err:?}"
    );
    assert!(elapsed < Duration::from_secs(12), "took {elapsed:?}: {err}");
    let err = store.get(&key("live/a/1.m4s")).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}
