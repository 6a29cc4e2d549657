"""A matrix-nio client (its own Olm/Megolm session handling, on the vodozemac bindings) in an
encrypted room with a matrix-sdk client: joins, decrypts the other's message, answers.

Driven by tests/blackbox/interop.rs over stdin/stdout: prints `READY <device id>` once joined with
its keys uploaded, `DECRYPTED <body>` when it decrypted the expected message, `SENT` once its own
message is out. Exits non-zero on any failure or after the deadline.
"""

import asyncio
import sys
import tempfile
import time

from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    LoginResponse,
    RoomMessageText,
    RoomSendResponse,
)

DEADLINE_S = 60


def fail(message):
    print(f"FAILED {message}", flush=True)
    sys.exit(1)


async def keep_keys_current(client):
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        await client.keys_query()


async def main(base_url, user_id, password, room_id, expected, answer):
    store = tempfile.mkdtemp(prefix="nio-store-")
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False)
    client = AsyncClient(base_url, user_id, store_path=store, config=config)
    try:
        login = await client.login(password, device_name="matrix-nio")
        if not isinstance(login, LoginResponse):
            fail(f"login: {login}")
        await client.sync(timeout=0, full_state=True)
        await keep_keys_current(client)
        joined = await client.join(room_id)
        if not isinstance(joined, JoinResponse):
            fail(f"join: {joined}")
        await client.sync(timeout=0)
        await keep_keys_current(client)
        print(f"READY {client.device_id}", flush=True)

        started = time.monotonic()
        decrypted = False
        while not decrypted:
            if time.monotonic() - started > DEADLINE_S:
                fail(f"did not decrypt {expected!r}")
            response = await client.sync(timeout=1000)
            await keep_keys_current(client)
            room = response.rooms.join.get(room_id)
            for event in room.timeline.events if room else []:
                if isinstance(event, RoomMessageText) and event.body == expected and event.decrypted:
                    decrypted = True
        print(f"DECRYPTED {expected}", flush=True)

        await keep_keys_current(client)
        sent = await client.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": answer},
            ignore_unverified_devices=True,
        )
        if not isinstance(sent, RoomSendResponse):
            fail(f"send: {sent}")
        print("SENT", flush=True)
    finally:
        await client.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
