//! `mllpd send` against a scripted MLLP server written here: it answers each frame as told
//! (AA, AE, CA, an ACK for another control id, silence, or closing), and records the payloads it
//! received so the tests can assert the exact bytes on the wire.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;

/// How the scripted server answers one frame.
#[derive(Clone, Copy, Debug)]
enum Reply {
    /// An ACK with this MSA-1 and MSA-3 echoing the frame's MSH-10.
    Ack(&'static str, &'static str),
    /// An AA for control id `OTHER`, then nothing.
    WrongId,
    /// Nothing.
    Silent,
    /// Close the connection.
    Close,
}

/// A server on 127.0.0.1:0 that accepts one connection and answers frames by `script`.
/// The handle yields the payloads received.
fn server(script: Vec<Reply>) -> (SocketAddr, JoinHandle<Vec<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut received = Vec::new();
        let mut script = script.into_iter();
        while let Some(payload) = read_frame(&mut stream) {
            let reply = script.next().unwrap_or(Reply::Ack("AA", ""));
            let id = msh_10(&payload);
            received.push(payload);
            match reply {
                Reply::Ack(code, text) => stream.write_all(&ack(code, &id, text)).unwrap(),
                Reply::WrongId => stream.write_all(&ack("AA", "OTHER", "")).unwrap(),
                Reply::Silent => {}
                Reply::Close => break,
            }
        }
        received
    });
    (address, handle)
}

/// Reads one MLLP frame byte by byte (a naive reader, independent of `mllp::Decoder`).
fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut byte = [0u8];
    loop {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        if byte[0] == 0x0B {
            break;
        }
    }
    let mut payload = Vec::new();
    loop {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        payload.push(byte[0]);
        if payload.ends_with(&[0x1C, 0x0D]) {
            payload.truncate(payload.len() - 2);
            return Some(payload);
        }
    }
}

fn msh_10(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    text.split('\r')
        .next()
        .unwrap()
        .split('|')
        .nth(9)
        .unwrap_or("")
        .to_owned()
}

fn ack(code: &str, id: &str, text: &str) -> Vec<u8> {
    let msa = if text.is_empty() {
        format!("MSA|{code}|{id}")
    } else {
        format!("MSA|{code}|{id}|{text}")
    };
    let payload = format!("MSH|^~\\&|RCV|RF|SND|SF|20240101||ACK^A01^ACK|A{id}|P|2.5\r{msa}\r");
    let mut frame = vec![0x0B];
    frame.extend_from_slice(payload.as_bytes());
    frame.extend_from_slice(&[0x1C, 0x0D]);
    frame
}

/// A message with control id `id`, segments ending in `eol`.
fn message(id: &str, eol: &str) -> String {
    format!("MSH|^~\\&|SND|SF|RCV|RF|20240101||ADT^A01|{id}|P|2.5{eol}PID|1||{id}-PAT{eol}")
}

/// The bytes the server must receive for `message(id, _)`.
fn wire(id: &str) -> Vec<u8> {
    message(id, "\r").into_bytes()
}

/// Runs `mllpd send args…` with `stdin` as its standard input.
fn send(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mllpd"))
        .arg("send")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn lf_file_with_two_messages_both_accepted_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "two.hl7",
        &(message("MSG1", "\n") + "\n" + &message("MSG2", "\n")),
    );
    let (address, server) = server(vec![Reply::Ack("AA", ""), Reply::Ack("CA", "stored")]);
    let output = send(&[&address.to_string(), &file], b"");
    assert_eq!(
        stdout(&output),
        "MSG1 AA\nMSG2 CA stored\n",
        "{}",
        stderr(&output)
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(server.join().unwrap(), vec![wire("MSG1"), wire("MSG2")]);
}

#[test]
fn crlf_messages_from_stdin_are_sent_with_cr() {
    let (address, server) = server(vec![]);
    let input = message("C1", "\r\n") + &message("C2", "\r\n");
    let output = send(&[&address.to_string()], input.as_bytes());
    assert_eq!(stdout(&output), "C1 AA\nC2 AA\n", "{}", stderr(&output));
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(server.join().unwrap(), vec![wire("C1"), wire("C2")]);
}

#[test]
fn files_and_stdin_are_sent_in_the_order_given() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.hl7", &message("A", "\r"));
    let b = write(dir.path(), "b.hl7", &message("B", "\n"));
    let (address, server) = server(vec![]);
    let output = send(
        &[&address.to_string(), &b, "-", &a],
        message("S", "\n").as_bytes(),
    );
    assert_eq!(stdout(&output), "B AA\nS AA\nA AA\n", "{}", stderr(&output));
    assert_eq!(
        server.join().unwrap(),
        vec![wire("B"), wire("S"), wire("A")]
    );
}

#[test]
fn mllp_framed_input_is_sent_frame_by_frame() {
    let dir = tempfile::tempdir().unwrap();
    let framed = format!(
        "\x0b{}\x1c\r\n\x0b{}\x1c\r",
        message("F1", "\r"),
        message("F2", "\n")
    );
    let file = write(dir.path(), "framed.mllp", &framed);
    let (address, server) = server(vec![]);
    let output = send(&[&address.to_string(), &file], b"");
    assert_eq!(stdout(&output), "F1 AA\nF2 AA\n", "{}", stderr(&output));
    assert_eq!(server.join().unwrap(), vec![wire("F1"), wire("F2")]);
}

#[test]
fn an_error_ack_is_reported_with_its_text_and_exits_1() {
    let (address, server) = server(vec![Reply::Ack("AA", ""), Reply::Ack("AE", "bad PID")]);
    let input = message("M1", "\n") + &message("M2", "\n") + &message("M3", "\n");
    let output = send(&[&address.to_string()], input.as_bytes());
    assert_eq!(
        stdout(&output),
        "M1 AA\nM2 AE bad PID\nM3 AA\n",
        "{}",
        stderr(&output)
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(server.join().unwrap().len(), 3);
}

#[test]
fn an_ack_for_another_control_id_does_not_count() {
    let (address, server) = server(vec![Reply::WrongId, Reply::Ack("AA", "")]);
    let input = message("W1", "\n") + &message("W2", "\n");
    // W2's AA must come within the timeout: 1 s leaves room for a busy machine.
    let output = send(&["--timeout", "1s", &address.to_string()], input.as_bytes());
    assert_eq!(
        stdout(&output),
        "W1 NONE no ACK within 1s\nW2 AA\n",
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("ignoring an ACK for control id 'OTHER' while waiting for 'W1'")
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(server.join().unwrap().len(), 2);
}

#[test]
fn no_answer_times_out_and_exits_1() {
    let (address, server) = server(vec![Reply::Silent]);
    let output = send(
        &["--timeout", "200ms", &address.to_string()],
        message("T1", "\n").as_bytes(),
    );
    assert_eq!(
        stdout(&output),
        "T1 NONE no ACK within 200ms\n",
        "{}",
        stderr(&output)
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(server.join().unwrap(), vec![wire("T1")]);
}

#[test]
fn a_closed_connection_fails_this_and_every_later_message() {
    let (address, server) = server(vec![Reply::Ack("AA", ""), Reply::Close]);
    let input = message("K1", "\n") + &message("K2", "\n") + &message("K3", "\n");
    let output = send(&[&address.to_string()], input.as_bytes());
    assert_eq!(
        stdout(&output),
        "K1 AA\nK2 NONE connection closed by the server\n\
         K3 NONE not sent: connection closed by the server\n",
        "{}",
        stderr(&output)
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(server.join().unwrap(), vec![wire("K1"), wire("K2")]);
}

#[test]
fn unreadable_input_and_refused_connections_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (address, server) = server(vec![]);
    let address = address.to_string();
    let missing = dir.path().join("missing.hl7");
    let output = send(&[&address, missing.to_str().unwrap()], b"");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot read"),
        "{}",
        stderr(&output)
    );

    let stray = write(
        dir.path(),
        "stray.hl7",
        &format!("PID|1\n{}", message("X", "\n")),
    );
    let output = send(&[&address, &stray], b"");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("segment 1 comes before the first MSH segment"));

    let output = send(&[&address], b"\n\n");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("no messages"));
    assert!(stdout(&output).is_empty());

    // Nothing reached the server; let it finish.
    drop(TcpStream::connect(&address).unwrap());
    assert!(server.join().unwrap().is_empty());

    let output = send(&[&address, "-"], message("R", "\n").as_bytes());
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot connect"),
        "{}",
        stderr(&output)
    );

    let output = send(&["no-port-here"], message("R", "\n").as_bytes());
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot resolve 'no-port-here'"),
        "{}",
        stderr(&output)
    );
}

/// A message with control id `id` and accept acknowledgment type (MSH-15) `accept`.
fn enhanced(id: &str, accept: &str) -> String {
    format!("MSH|^~\\&|SND|SF|RCV|RF|20240101||ADT^A01|{id}|P|2.5|||{accept}|NE\nPID|1\n")
}

#[test]
fn msh_15_ne_awaits_no_ack_and_er_takes_silence_as_success() {
    let (address, server) = server(vec![Reply::Silent, Reply::Silent, Reply::Ack("CA", "")]);
    let input = enhanced("N1", "NE") + &enhanced("E1", "ER") + &enhanced("A1", "AL");
    // A1's CA must come within the timeout: 1 s leaves room for a busy machine.
    let output = send(&["--timeout", "1s", &address.to_string()], input.as_bytes());
    assert_eq!(
        stdout(&output),
        "N1 NONE no ACK requested (MSH-15 NE)\n\
         E1 NONE no ACK within 1s (MSH-15 ER: no error reported)\nA1 CA\n",
        "{}",
        stderr(&output)
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(server.join().unwrap().len(), 3);
}

#[test]
fn msh_15_er_with_an_error_ack_exits_1() {
    let (address, server) = server(vec![Reply::Ack("CE", "no room")]);
    let output = send(&[&address.to_string()], enhanced("E2", "ER").as_bytes());
    assert_eq!(stdout(&output), "E2 CE no room\n", "{}", stderr(&output));
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(server.join().unwrap().len(), 1);
}
