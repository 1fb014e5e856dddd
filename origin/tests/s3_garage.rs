//! The harness's S3 server (Garage) works through the archive's own S3 client: put, get, ranges,
//! listing and delete, and wrong credentials refused.
#![allow(clippy::unwrap_used)]

use aws_sdk_s3::primitives::ByteStream;
use cascade_origin::archive::store::S3Store;
use cascade_testkit::Garage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_range_list_delete() {
    let garage = Garage::start().unwrap();
    let store = S3Store::new(&garage.storage_config());
    let s3 = store.client();
    let bucket = garage.storage_config().bucket;
    let segment: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();

    for key in [
        "live/abc/720p/1.m4s",
        "live/abc/720p/2.m4s",
        "live/abc/480p/1.m4s",
    ] {
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .content_type("video/mp4")
            .body(ByteStream::from(segment.clone()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e:?}\n{}", garage.log_tail()));
    }

    let got = s3
        .get_object()
        .bucket(&bucket)
        .key("live/abc/720p/1.m4s")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_type(), Some("video/mp4"));
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        segment.as_slice()
    );

    let range = s3
        .get_object()
        .bucket(&bucket)
        .key("live/abc/720p/1.m4s")
        .range("bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(range.content_range(), Some("bytes 1000-1999/100000"));
    assert_eq!(
        range.body.collect().await.unwrap().into_bytes().as_ref(),
        &segment[1000..2000]
    );

    let listed = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("live/abc/720p/")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["live/abc/720p/1.m4s", "live/abc/720p/2.m4s"]);

    s3.delete_object()
        .bucket(&bucket)
        .key("live/abc/720p/1.m4s")
        .send()
        .await
        .unwrap();
    let gone = s3
        .get_object()
        .bucket(&bucket)
        .key("live/abc/720p/1.m4s")
        .send()
        .await
        .unwrap_err();
    assert!(
        gone.into_service_error().is_no_such_key(),
        "a deleted object must be NoSuchKey"
    );
    let listed = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("live/abc/")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["live/abc/480p/1.m4s", "live/abc/720p/2.m4s"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused() {
    let garage = Garage::start().unwrap();
    let mut config = garage.storage_config();
    config.secret_access_key = cascade_config::Secret::new("0".repeat(64));
    let store = S3Store::new(&config);
    let s3 = store.client();
    let err = s3
        .list_objects_v2()
        .bucket(&config.bucket)
        .send()
        .await
        .unwrap_err();
    let status = err.raw_response().map(|r| r.status().as_u16());
    assert_eq!(status, Some(403), "{err:?}");
}
