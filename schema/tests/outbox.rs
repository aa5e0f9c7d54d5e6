//! The outbox: events queued for other servers are read back as the typed events they were
//! queued as, in order per destination, on SQLite and PostgreSQL.

use parley_schema::{
    testing, CommitToApply, Member, MessageToAppend, OutboundDevice, OutboundDeviceKey,
    OutboundEvent, OutboundWelcome, OutboxItem,
};

fn device(user_id: &str, device_id: &str) -> OutboundDevice {
    OutboundDevice {
        user_id: user_id.into(),
        device_id: device_id.into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_events_are_read_back_typed_in_order_per_destination() {
    for (store, _d) in testing::stores().await {
        let (a, b) = ("@a:t.example", "@b:b.example");
        let group = "!g:t.example";
        store
            .hub_log()
            .create_group(group, a, "D", 1)
            .await
            .unwrap();
        // A commit adding a device of b.example: the commit and its Welcome go there.
        let welcome = OutboundWelcome {
            sender: device(a, "D"),
            recipients: vec![device(b, "E")],
            message: b"welcome".to_vec(),
        };
        store
            .hub_log()
            .apply_commit(CommitToApply {
                disappear_after_ms: None,
                roles: None,
                join_rules: None,
                group_id: group.into(),
                epoch: 0,
                sender_user: a.into(),
                sender_device: "D".into(),
                message: b"commit".to_vec(),
                adds_json: "[]".into(),
                removes_json: "[]".into(),
                removed: vec![],
                added: vec![Member {
                    user_id: b.into(),
                    device_id: "E".into(),
                    leaf_index: 1,
                }],
                welcome: None,
                welcome_recipients: vec![],
                group_info: None,
                ts: 5,
                outbox: vec![
                    OutboxItem::message("b.example"),
                    OutboxItem::welcome("b.example", welcome.clone()),
                ],
            })
            .await
            .unwrap()
            .unwrap();
        store
            .hub_log()
            .append_message(MessageToAppend {
                expires_ts: None,
                group_id: group.into(),
                sender_user: a.into(),
                sender_device: "D".into(),
                kind: "application".into(),
                epoch: 1,
                message: b"ct".to_vec(),
                ts: 6,
                max_past_epochs: 1,
                txn_id: Some("t1".into()),
                roster_epoch: 1,
                outbox: vec!["b.example".into()],
            })
            .await
            .unwrap()
            .unwrap();
        let devices = vec![OutboundDeviceKey {
            device_id: "D".into(),
            signature_key: "AAAA".into(),
        }];
        store
            .outbox()
            .queue_device_list_update(&["b.example".into(), "c.example".into()], a, &devices, 7)
            .await
            .unwrap();

        let update = OutboundEvent::DeviceListUpdate {
            user_id: a.into(),
            devices,
        };
        let rows = store.outbox().outbox_batch("b.example", 10).await.unwrap();
        assert_eq!(
            rows.iter().map(|r| r.event.clone()).collect::<Vec<_>>(),
            [
                Ok(OutboundEvent::Message {
                    group_id: group.into(),
                    seq: 1
                }),
                Ok(OutboundEvent::Welcome {
                    group_id: group.into(),
                    welcome
                }),
                Ok(OutboundEvent::Message {
                    group_id: group.into(),
                    seq: 2
                }),
                Ok(update.clone()),
            ],
            "{:?}",
            store.backend()
        );
        assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(
            rows.iter().map(|r| r.created_ts).collect::<Vec<_>>(),
            [5, 5, 6, 7]
        );
        let c_rows = store.outbox().outbox_batch("c.example", 10).await.unwrap();
        assert_eq!(c_rows.len(), 1);
        assert_eq!(c_rows[0].event, Ok(update));
        let mut destinations = store.outbox().outbox_destinations().await.unwrap();
        destinations.sort();
        assert_eq!(destinations, ["b.example", "c.example"]);

        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        store.outbox().delete_outbox(&ids).await.unwrap();
        assert_eq!(store.outbox().outbox_len("b.example").await.unwrap(), 0);
        assert_eq!(store.outbox().outbox_len("c.example").await.unwrap(), 1);
    }
}
