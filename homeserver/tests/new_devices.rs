//! A contact's new device joins their groups without their other devices: the hub of each
//! group writes a `member_devices_changed` notice when the user's device list stops matching
//! the roster, and another member's client commits the change. Real homeservers over real
//! federation, native MLS clients.

mod common;

use std::time::{Duration, Instant};

use common::{federated_pair, Db};
use parley_sytest::device::Device;

/// The `member_devices_changed` notices `device` has received so far, in order.
fn device_notices(device: &Device) -> Vec<serde_json::Value> {
    device
        .notices
        .iter()
        .filter(|(_, n)| n["type"] == "member_devices_changed")
        .map(|(_, n)| n.clone())
        .collect()
}

/// Those of [`device_notices`] written into `group`.
fn notices_in(device: &Device, group: &str) -> Vec<serde_json::Value> {
    device
        .notices
        .iter()
        .filter(|(g, n)| g == group && n["type"] == "member_devices_changed")
        .map(|(_, n)| n.clone())
        .collect()
}

fn ids(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["device_id"].as_str().map(str::to_owned))
        .collect()
}

on_both_backends!(
    a_contacts_new_device_is_added_by_another_member_while_their_other_device_is_offline,
    |db: Db| async move {
        let (a, b) = federated_pair(db, "").await;
        let mut carol = Device::register(&a, "carol").await.unwrap();
        let mut bob = Device::register(&b, "bob").await.unwrap();
        carol.know(&["@bob:b.example"]);
        bob.know(&["@carol:a.example"]);
        let group = carol.create_group().await.unwrap();
        carol.add(&group, &["@bob:b.example"]).await.unwrap();
        bob.sync_until(20, "the Welcome", |d| d.engine.group_ids().contains(&group))
            .await
            .unwrap();
        // A second group on the same hub: each group gets its own notice.
        let other_group = carol.create_group().await.unwrap();
        carol.add(&other_group, &["@bob:b.example"]).await.unwrap();
        bob.sync_until(20, "the second Welcome", |d| {
            d.engine.group_ids().contains(&other_group)
        })
        .await
        .unwrap();
        let old_device = bob.me();

        // Bob's first device goes quiet; he logs in on a second one.
        let mut laptop = Device::login(&b, "bob").await.unwrap();
        laptop.know(&["@carol:a.example"]);
        carol
            .sync_until(20, "the device notice in both groups", |d| {
                !notices_in(d, &group).is_empty() && !notices_in(d, &other_group).is_empty()
            })
            .await
            .unwrap();
        assert_eq!(
            ids(&notices_in(&carol, &other_group)[0]["added"]),
            vec![laptop.device_id.clone()]
        );
        let notice = notices_in(&carol, &group).remove(0);
        assert_eq!(notice["user_id"], "@bob:b.example");
        assert_eq!(ids(&notice["added"]), vec![laptop.device_id.clone()]);
        assert!(ids(&notice["removed"]).is_empty());

        // Carol adds the device her own fetch of bob's list confirms.
        let listed: Vec<String> = carol
            .client
            .user_devices("@bob:b.example")
            .await
            .unwrap()
            .devices
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        assert!(listed.contains(&laptop.device_id));
        carol
            .add_devices(&group, "@bob:b.example", &ids(&notice["added"]))
            .await
            .unwrap();
        laptop
            .sync_until(20, "the Welcome", |d| d.engine.group_ids().contains(&group))
            .await
            .unwrap();
        carol.send_text(&group, "hello, laptop").await.unwrap();
        laptop
            .sync_until(20, "carol's text", |d| {
                d.texts(&group).contains(&"hello, laptop".to_owned())
            })
            .await
            .unwrap();

        // Bob deletes the old device from the laptop: carol is asked to remove it.
        laptop
            .client
            .delete_device(&old_device.device_id)
            .await
            .unwrap();
        carol
            .sync_until(20, "the removal notice", |d| {
                notices_in(d, &group).len() >= 2
            })
            .await
            .unwrap();
        let notice = notices_in(&carol, &group).remove(1);
        assert!(ids(&notice["added"]).is_empty());
        assert_eq!(ids(&notice["removed"]), vec![old_device.device_id.clone()]);
        carol.remove(&group, &[old_device]).await.unwrap();
        carol
            .send_text(&group, "just the laptop now")
            .await
            .unwrap();
        laptop
            .sync_until(20, "the second text", |d| {
                d.texts(&group).contains(&"just the laptop now".to_owned())
            })
            .await
            .unwrap();
    }
);

/// A user (or their server) changing devices in a loop writes at most one notice per group
/// per interval, and the last one still names every new device.
#[tokio::test(flavor = "multi_thread")]
async fn device_list_churn_writes_one_notice_per_interval_and_loses_no_device() {
    const LOGINS: usize = 8;
    let (a, b) = federated_pair(Db::Sqlite, "").await;
    let mut carol = Device::register(&a, "carol").await.unwrap();
    let mut bob = Device::register(&b, "bob").await.unwrap();
    carol.know(&["@bob:b.example"]);
    bob.know(&["@carol:a.example"]);
    let group = carol.create_group().await.unwrap();
    carol.add(&group, &["@bob:b.example"]).await.unwrap();
    bob.sync_until(20, "the Welcome", |d| d.engine.group_ids().contains(&group))
        .await
        .unwrap();

    let started = Instant::now();
    let mut new_devices = Vec::new();
    for _ in 0..LOGINS {
        new_devices.push(Device::login(&b, "bob").await.unwrap().device_id);
    }
    let churn = started.elapsed();
    new_devices.sort();
    // After the interval, the re-check writes a notice naming every new device.
    carol
        .sync_until(30, "a notice naming every new device", |d| {
            device_notices(d).last().is_some_and(|n| {
                let mut added = ids(&n["added"]);
                added.sort();
                added == new_devices
            })
        })
        .await
        .unwrap();
    let window = started.elapsed();
    let notices = device_notices(&carol);
    let allowed = (window.as_secs_f64() / 5.0).ceil() as usize + 1;
    println!(
        "{LOGINS} device list changes in {:.1} s wrote {} notices into the group in {:.1} s (at most {allowed} allowed)",
        churn.as_secs_f64(),
        notices.len(),
        window.as_secs_f64()
    );
    assert!(
        !notices.is_empty() && notices.len() <= allowed,
        "{notices:?}"
    );
    let mut last = ids(&notices[notices.len() - 1]["added"]);
    last.sort();
    assert_eq!(last, new_devices);
    // Once the roster matches the list, no further notice is written.
    carol
        .add_devices(&group, "@bob:b.example", &new_devices)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    carol.sync_all().await.unwrap();
    assert_eq!(device_notices(&carol).len(), notices.len());
}
