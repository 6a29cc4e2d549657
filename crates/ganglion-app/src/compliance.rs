//! What the route table does not serve of the Matrix client-server API, and why: the test
//! `tests/compliance.rs` checks these lists against the spec's operations (`tests/spec/`) and
//! the route table, and writes `docs/COMPLIANCE.md` from them.

/// Operations of the spec with no route here, by `operationId`, with the reason.
pub const NOT_YET: &[(&str, &str)] = &[
    ("getWhoIs", "no server administration API yet"),
    ("getAdminSuspendUser", "no server administration API yet"),
    ("setAdminSuspendUser", "no server administration API yet"),
    ("getAdminLockUser", "no server administration API yet"),
    ("setAdminLockUser", "no server administration API yet"),
    ("pingAppservice", "application services are not supported"),
    ("updateAppserviceRoomDirectoryVisibility", "application services are not supported"),
    ("generateLoginToken", "login tokens for signing in other devices are not supported"),
    ("getMutualRooms", "not yet"),
    ("getAuthMetadata", "OAuth 2.0 sign-in is not supported: clients sign in with a password"),
    ("getEvents", "deprecated: clients use `/sync`"),
    ("initialSync", "deprecated: clients use `/sync`"),
    ("getOneEvent", "deprecated: clients use `/rooms/{roomId}/event/{eventId}`"),
    ("peekEvents", "peeking into rooms is not supported"),
    ("getWellknownPolicy", "policy servers are not supported"),
    (
        "setProfileField",
        "not yet: `displayname` and `avatar_url` are served by their own routes; other profile fields are not",
    ),
    (
        "getProfileField",
        "not yet: `displayname` and `avatar_url` are served by their own routes; other profile fields are not",
    ),
    (
        "deleteProfileField",
        "not yet: `displayname` and `avatar_url` are served by their own routes; other profile fields are not",
    ),
    ("refresh", "refresh tokens are not issued: access tokens do not expire"),
    ("registrationTokenValidity", "registration tokens are not supported"),
    ("roomInitialSync", "not yet: clients use `/sync`"),
    ("redirectToSSO", "single sign-on is not supported: clients sign in with a password"),
    ("redirectToIdP", "single sign-on is not supported: clients sign in with a password"),
    ("getWellknownSupport", "not yet: no support contacts can be configured"),
];

/// Operations whose route is served, but only in part, by `operationId`, with what is missing.
pub const PARTLY: &[(&str, &str)] = &[
    (
        "inviteBy3PID",
        "the route serves invites by user ID; an invite by email answers 400 `M_MISSING_PARAM`, as no identity server is supported",
    ),
    ("getAccount3PIDs", "always empty: third-party identifiers (email, phone) are not supported"),
    ("post3PIDs", "answers 403 `M_THREEPID_DENIED`: third-party identifiers are not supported"),
    ("add3PID", "answers 403 `M_THREEPID_DENIED`: third-party identifiers are not supported"),
    ("bind3PID", "answers 403 `M_THREEPID_DENIED`: no identity server is supported"),
    ("delete3pidFromAccount", "none is ever bound: answers `id_server_unbind_result: no-support`"),
    ("unbind3pidFromAccount", "none is ever bound: answers `id_server_unbind_result: no-support`"),
    ("requestTokenTo3PIDEmail", "answers 403 `M_THREEPID_DENIED`: no email is sent"),
    ("requestTokenTo3PIDMSISDN", "answers 403 `M_THREEPID_DENIED`: no SMS is sent"),
    ("requestTokenToResetPasswordEmail", "answers 403 `M_THREEPID_DENIED`: no email is sent"),
    ("requestTokenToResetPasswordMSISDN", "answers 403 `M_THREEPID_DENIED`: no SMS is sent"),
    ("requestTokenToRegisterEmail", "answers 403 `M_THREEPID_DENIED`: no email is sent"),
    ("requestTokenToRegisterMSISDN", "answers 403 `M_THREEPID_DENIED`: no SMS is sent"),
    ("getProtocols", "always empty: no network is bridged (application services are not supported)"),
    ("getProtocolMetadata", "answers 404 `M_NOT_FOUND`: no network is bridged"),
    ("queryLocationByProtocol", "answers 404 `M_NOT_FOUND`: no network is bridged"),
    ("queryUserByProtocol", "answers 404 `M_NOT_FOUND`: no network is bridged"),
    ("queryLocationByAlias", "always empty: no network is bridged"),
    ("queryUserByID", "always empty: no network is bridged"),
];
