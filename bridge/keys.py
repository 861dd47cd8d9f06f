"""`segue keys`: CURVE key pairs for a daemon reachable beyond loopback.

The shared-secret token authenticates requests, but anyone who can connect still
reads the PUB events and can make libzmq buffer large messages before the token
is seen. ZeroMQ's CURVE security (pyzmq's `zmq.auth`) authenticates and encrypts
the connection itself, on both sockets: a client whose public key is not in the
daemon's `clients/` folder never completes the handshake, so it can send nothing
and hear nothing.

    segue keys DIR              # server.key / server.key_secret and clients/
    segue keys DIR --client NAME  # NAME.key / NAME.key_secret, public half added to clients/

Give a client its own `NAME.key_secret` and the daemon's `server.key` (public);
start the daemon with `segue serve --curve-dir DIR`.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import zmq
import zmq.auth

SERVER = "server"
CLIENTS = "clients"


@dataclass(frozen=True)
class ServerKeys:
    """The daemon's key pair and the folder of public keys it lets in."""

    public: bytes
    secret: bytes
    clients_dir: str


def make_server_keys(folder: str) -> str:
    """Create the daemon's key pair in `folder` (and an empty clients/ folder); returns the secret file."""
    os.makedirs(os.path.join(folder, CLIENTS), mode=0o700, exist_ok=True)
    if os.path.exists(os.path.join(folder, SERVER + ".key_secret")):
        raise FileExistsError(f"{folder} already holds a server key; remove it to make a new one")
    _public, secret = zmq.auth.create_certificates(folder, SERVER)
    os.chmod(secret, 0o600)
    return secret


def make_client_keys(folder: str, name: str) -> str:
    """Create a client key pair in `folder` and allow it: its public key goes into clients/."""
    if not name or os.sep in name or name.startswith(".") or name == SERVER:
        raise ValueError(f"client name {name!r} must be a plain file name other than {SERVER!r}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    public, secret = zmq.auth.create_certificates(folder, name)
    os.chmod(secret, 0o600)
    os.makedirs(os.path.join(folder, CLIENTS), mode=0o700, exist_ok=True)
    with open(public, "rb") as src, open(os.path.join(folder, CLIENTS, name + ".key"), "wb") as dst:
        dst.write(src.read())
    return secret


def load_server_keys(folder: str) -> ServerKeys:
    secret_file = os.path.join(folder, SERVER + ".key_secret")
    if not os.path.isfile(secret_file):
        raise ValueError(f"--curve-dir {folder!r} has no {SERVER}.key_secret; make one with `segue keys {folder}`")
    public, secret = zmq.auth.load_certificate(secret_file)
    clients = os.path.join(folder, CLIENTS)
    if not os.path.isdir(clients) or not any(n.endswith(".key") for n in os.listdir(clients)):
        raise ValueError(f"--curve-dir {folder!r}: no client keys in {clients}; add one with "
                         f"`segue keys {folder} --client NAME`")
    assert secret is not None
    return ServerKeys(public, secret, clients)


def client_socket(ctx: zmq.Context, kind: int, secret_file: str, server_public_file: str) -> Any:
    """A client socket set up for CURVE with this client's secret key and the daemon's public key."""
    sock = ctx.socket(kind)
    public, secret = zmq.auth.load_certificate(secret_file)
    server_public, _ = zmq.auth.load_certificate(server_public_file)
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server_public
    return sock


def main(argv: Optional[Sequence[str]] = None, parser: Optional[argparse.ArgumentParser] = None) -> int:
    p = parser or argparse.ArgumentParser(prog="segue keys", description=__doc__.splitlines()[0])
    if parser is None:
        add_arguments(p)
    args = p.parse_args(argv)
    return run(args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="where the keys live (the daemon reads it with --curve-dir)")
    p.add_argument("--client", metavar="NAME", help="make a client key pair NAME and allow it")


def run(args: argparse.Namespace) -> int:
    try:
        if args.client:
            secret = make_client_keys(args.folder, args.client)
            print(f"client key: {secret} (give it, with {os.path.join(args.folder, SERVER + '.key')}, to the client)")
        else:
            secret = make_server_keys(args.folder)
            print(f"server key: {secret}; now add clients with `segue keys {args.folder} --client NAME`")
    except (OSError, ValueError) as e:
        print(f"segue keys: {e}", file=sys.stderr)
        return 2
    return 0


def add_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The `segue.commands` entry point: `segue keys`."""
    p = subparsers.add_parser("keys", help="make CURVE keys for a daemon reachable beyond loopback")
    add_arguments(p)
    p.set_defaults(func=run)
    return p


if __name__ == "__main__":
    sys.exit(main())
