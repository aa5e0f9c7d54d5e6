ALTER TABLE outbox DROP CONSTRAINT outbox_one_event;
UPDATE outbox
    SET recipients = json_build_object(
            'sender', json_build_object('user_id', sender_user, 'device_id', sender_device),
            'recipients', recipients::json)::text
    WHERE kind = 'welcome';
UPDATE outbox
    SET recipients = json_build_object('user_id', user_id, 'devices', devices::json)::text,
        group_id = ''
    WHERE kind = 'device_list_update';
ALTER TABLE outbox
    DROP COLUMN sender_user,
    DROP COLUMN sender_device,
    DROP COLUMN user_id,
    DROP COLUMN devices;
ALTER TABLE outbox ALTER COLUMN group_id SET NOT NULL;
ALTER TABLE outbox RENAME COLUMN welcome TO payload;
