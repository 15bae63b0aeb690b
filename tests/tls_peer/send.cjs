// Sends one HL7 message over MLLP with TLS (mutual TLS when a certificate is given) using
// node-hl7-client, and prints the ACK's MSA-1 and MSA-2 ("ACK AA MSG1"). Used by
// tests/tls_interop.rs. Usage: node send.cjs HOST PORT SERVERNAME CA CERT KEY MESSAGE_FILE
"use strict";
const fs = require("node:fs");
const { Client, Message } = require("node-hl7-client");

const [host, port, servername, ca, cert, key, file] = process.argv.slice(2);
const text = fs.readFileSync(file, "latin1");
const version = text.split("\r")[0].split("|")[11];
const client = new Client({
  host,
  version,
  tls: {
    ca: fs.readFileSync(ca),
    cert: fs.readFileSync(cert),
    key: fs.readFileSync(key),
    servername,
    rejectUnauthorized: true,
  },
});
const timer = setTimeout(() => {
  console.error("no ACK within 20 s");
  process.exit(2);
}, 20000);
const connection = client.createConnection(
  { port: Number(port), waitAck: true },
  async (res) => {
    const ack = res.getMessage();
    console.log(`ACK ${ack.get("MSA.1").toString()} ${ack.get("MSA.2").toString()}`);
    clearTimeout(timer);
    await connection.close();
    process.exit(0);
  },
);
connection.on("client.error", (error) => {
  console.error(`client error: ${error}`);
});
connection.sendMessage(new Message({ text })).catch((error) => {
  console.error(`send failed: ${error}`);
  process.exit(3);
});
