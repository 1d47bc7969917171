"""The provisioning callback token and the installer's media URL (pure)."""

from __future__ import annotations

from infraflow.common.ids import new_id
from infraflow.common.provisioning import (
    InstallerParams,
    callback_key,
    callback_token,
    callback_url,
    derive_callback_key,
    installer_media_url,
    installer_params,
    slot_key,
    strip_installer_params,
    verify_callback_token,
)
from infraflow.common.vault import Vault


def test_token_is_bound_to_server_run_and_key() -> None:
    old, new = Vault.generate_key(), Vault.generate_key()
    key_old, key_new = derive_callback_key(old), derive_callback_key(new)
    server, run = new_id("srv"), new_id("run")
    token = callback_token(key_old, server, run)
    assert callback_token(key_old, server, run) == token  # deterministic: nothing to store
    assert len(token) == 22  # 128 bits, base64url without padding
    assert old not in token
    assert key_old.hex() not in token
    # rotation: new key first, the old one still verifies runs in flight
    assert verify_callback_token([key_new, key_old], server, run, token)
    assert not verify_callback_token([key_new], server, run, token)
    assert not verify_callback_token([key_old], new_id("srv"), run, token)
    assert not verify_callback_token([key_old], server, new_id("run"), token)
    tampered = token[:-1] + ("B" if token.endswith("A") else "A")
    assert not verify_callback_token([key_old], server, run, tampered)
    assert not verify_callback_token([], server, run, token)


def test_derived_key_is_not_the_credential_key() -> None:
    key = Vault.generate_key()
    derived = derive_callback_key(key)
    assert derived != key.encode()
    assert len(derived) == 32


def test_media_url_carries_the_installer_params_and_strips_back() -> None:
    server, run = new_id("srv"), new_id("run")
    params = InstallerParams(
        callback_url=callback_url("https://api.example.com/", server), run_id=run, token="t0k-en_"
    )
    assert params.callback_url == (
        f"https://api.example.com/v1/servers/{server}/provisioning-callback"
    )
    image = "https://images.example.com/os/installer.iso?arch=x86_64"
    media = installer_media_url(image, params)
    assert media.startswith("https://images.example.com/os/installer.iso?arch=x86_64&")
    assert installer_params(media) == params
    assert strip_installer_params(media) == image
    # adding twice replaces, never duplicates
    assert installer_media_url(media, params) == media
    assert installer_params(image) is None


def test_kv_keys() -> None:
    run = new_id("run")
    assert callback_key(run) == f"callback.{run}"
    assert slot_key("dc-1", 3) == "slot.dc-1.3"
