//! Diesel table definitions, shared by both backends (the SQL types are chosen to map alike).

diesel::table! {
    users (user_id) {
        user_id -> Text,
        localpart -> Text,
        password_hash -> Text,
        created_ts -> BigInt,
        admin -> Bool,
        deactivated_ts -> Nullable<BigInt>,
    }
}

diesel::table! {
    devices (user_id, device_id) {
        user_id -> Text,
        device_id -> Text,
        display_name -> Nullable<Text>,
        signature_key -> Nullable<Binary>,
        created_ts -> BigInt,
        last_seen_ts -> BigInt,
        received_pos -> BigInt,
    }
}

diesel::table! {
    sessions (session_id) {
        session_id -> Text,
        user_id -> Text,
        device_id -> Text,
        created_ts -> BigInt,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Binary,
        session_id -> Text,
        rotated -> Bool,
        expires_ts -> BigInt,
        rotated_ts -> Nullable<BigInt>,
    }
}

diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::allow_tables_to_appear_in_same_query!(users, devices, sessions, refresh_tokens);

diesel::table! {
    stream_position (id) {
        id -> Integer,
        pos -> BigInt,
    }
}

diesel::table! {
    key_packages (id) {
        id -> BigInt,
        user_id -> Text,
        device_id -> Text,
        kp_ref -> Binary,
        data -> Binary,
        not_after_ms -> BigInt,
        last_resort -> Bool,
    }
}

diesel::table! {
    groups (group_id) {
        group_id -> Text,
        epoch -> BigInt,
        last_seq -> BigInt,
        group_info -> Nullable<Binary>,
        created_ts -> BigInt,
        pruned_seq -> BigInt,
        roles -> Nullable<Text>,
        join_rules -> Nullable<Text>,
        disappear_after_ms -> Nullable<BigInt>,
    }
}

diesel::table! {
    memberships (id) {
        id -> BigInt,
        group_id -> Text,
        user_id -> Text,
        device_id -> Text,
        leaf_index -> BigInt,
        joined_pos -> BigInt,
        left_pos -> Nullable<BigInt>,
    }
}

diesel::table! {
    group_messages (group_id, seq) {
        group_id -> Text,
        seq -> BigInt,
        stream_pos -> BigInt,
        sender_user -> Text,
        sender_device -> Text,
        kind -> Text,
        epoch -> BigInt,
        message -> Binary,
        adds -> Nullable<Text>,
        removes -> Nullable<Text>,
        ts -> BigInt,
        expires_ts -> Nullable<BigInt>,
    }
}

diesel::table! {
    welcomes (id) {
        id -> BigInt,
        stream_pos -> BigInt,
        user_id -> Text,
        device_id -> Text,
        group_id -> Text,
        sender_user -> Text,
        sender_device -> Text,
        body_id -> BigInt,
        ts -> BigInt,
    }
}

diesel::table! {
    welcome_bodies (id) {
        id -> BigInt,
        welcome -> Binary,
        origin -> Nullable<Text>,
        event_id -> Nullable<Text>,
    }
}

diesel::table! {
    transaction_ids (user_id, device_id, txn_id) {
        user_id -> Text,
        device_id -> Text,
        txn_id -> Text,
        group_id -> Text,
        seq -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    groups,
    memberships,
    group_messages,
    welcomes,
    welcome_bodies
);
diesel::joinable!(welcomes -> welcome_bodies (body_id));

diesel::table! {
    outbox (id) {
        id -> BigInt,
        destination -> Text,
        kind -> Text,
        group_id -> Nullable<Text>,
        seq -> Nullable<BigInt>,
        welcome -> Nullable<Binary>,
        sender_user -> Nullable<Text>,
        sender_device -> Nullable<Text>,
        recipients -> Nullable<Text>,
        user_id -> Nullable<Text>,
        devices -> Nullable<Text>,
        created_ts -> BigInt,
    }
}

diesel::table! {
    inbound_transactions (origin, txn_id) {
        origin -> Text,
        txn_id -> Text,
        response -> Text,
        received_ts -> BigInt,
    }
}

diesel::table! {
    remote_devices (user_id, device_id) {
        user_id -> Text,
        device_id -> Text,
        signature_key -> Binary,
        updated_ts -> BigInt,
    }
}

diesel::table! {
    remote_device_lists (user_id) {
        user_id -> Text,
        updated_ts -> BigInt,
    }
}

diesel::table! {
    registration_tokens (token_hash) {
        token_hash -> Binary,
        token_id -> Text,
        uses_allowed -> Nullable<BigInt>,
        uses -> BigInt,
        expires_ts -> Nullable<BigInt>,
        created_ts -> BigInt,
        created_by -> Text,
    }
}

diesel::table! {
    server_acl (pattern, rule) {
        pattern -> Text,
        rule -> Text,
        created_ts -> BigInt,
    }
}

diesel::table! {
    admin_audit (id) {
        id -> BigInt,
        ts -> BigInt,
        actor -> Text,
        action -> Text,
        target -> Nullable<Text>,
        detail -> Text,
    }
}

diesel::table! {
    leases (name) {
        name -> Text,
        holder -> Text,
        until_ts -> BigInt,
    }
}

diesel::table! {
    media (server_name, media_id) {
        server_name -> Text,
        media_id -> Text,
        uploader -> Nullable<Text>,
        size -> BigInt,
        created_ts -> BigInt,
        last_access_ts -> BigInt,
        referenced_ts -> Nullable<BigInt>,
    }
}

diesel::table! {
    login_challenges (challenge_hash) {
        challenge_hash -> Text,
        user_id -> Text,
        device_id -> Text,
        created_ts -> BigInt,
        expires_ts -> BigInt,
    }
}
