//! The rule variables (`msh`, `pid`, `pv1`, `obx`, `obx_list`, `segments`, `peer`, `tls`),
//! the HL7 field each key reads, and the per-message extraction of only what was referenced.
//!
//! Field numbers follow HL7 v2.5 (chapter 2 for MSH, chapter 3 for PID/PV1, chapter 7 for
//! OBX). Keys that name a coded or composite field read its first component (the identifier
//! or namespace id a rule compares), keys that name a person or place read the whole first
//! repetition; every choice is written next to its key below. Values are escape-decoded
//! (`\F\` → `|`) and turned into text: UTF-8 as is, anything else byte for byte as Latin-1,
//! so no payload can make extraction fail. Strings borrow the payload when nothing needed
//! decoding.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use cel::common::types::{CelBool, CelInt, CelList, CelMap, CelMapKey, CelString};
use cel::common::value::{CowVal, Val};

use crate::hl7::{Delimiters, Location, Message, Path, Segment};

/// A variable root a rule may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Root {
    /// `msh`: header fields.
    Msh,
    /// `pid`: first PID segment.
    Pid,
    /// `pv1`: first PV1 segment.
    Pv1,
    /// `obx`: first OBX segment.
    Obx,
    /// `obx_list`: every OBX segment, same keys as `obx`.
    ObxList,
    /// `segments`: the segment ids in order.
    Segments,
    /// `peer`: the connection's peer.
    Peer,
    /// `tls`: the connection's TLS client identity.
    Tls,
}

/// One key of a map variable: its name, the HL7 path it reads, and why.
pub(crate) struct Key {
    /// Name as written in a rule (`msh.control_id` → `control_id`).
    pub name: &'static str,
    /// The HL7 path read (MSH numbering for MSH).
    pub path: &'static str,
}

/// `msh.*` (HL7 v2.5 §2.14.9).
const MSH_KEYS: &[Key] = &[
    // MSH-9 is MSG: message code ^ trigger event ^ message structure.
    Key {
        name: "msg_type",
        path: "MSH-9.1",
    },
    Key {
        name: "trigger",
        path: "MSH-9.2",
    },
    Key {
        name: "structure",
        path: "MSH-9.3",
    },
    // MSH-3…6 are HD (namespace id ^ universal id ^ universal id type): rules compare the
    // namespace id, which is what senders fill; `field("MSH-4")` gives the whole field.
    Key {
        name: "sending_app",
        path: "MSH-3.1",
    },
    Key {
        name: "sending_fac",
        path: "MSH-4.1",
    },
    Key {
        name: "receiving_app",
        path: "MSH-5.1",
    },
    Key {
        name: "receiving_fac",
        path: "MSH-6.1",
    },
    // MSH-10 whole, byte for byte what the ACK echoes in MSA-2.
    Key {
        name: "control_id",
        path: "MSH-10",
    },
    // MSH-11 is PT (processing id ^ processing mode): `P`, `T` or `D`.
    Key {
        name: "processing_id",
        path: "MSH-11.1",
    },
    // MSH-12 is VID (version id ^ …): `2.5.1`.
    Key {
        name: "version",
        path: "MSH-12.1",
    },
    // MSH-18 repeats: the first repetition is the character set of the message.
    Key {
        name: "charset",
        path: "MSH-18(1)",
    },
    // MSH-7 is TS (time ^ degree of precision) before v2.6, DTM after: the time itself.
    Key {
        name: "datetime",
        path: "MSH-7.1",
    },
];

/// `pid.*` (HL7 v2.5 §3.4.2).
const PID_KEYS: &[Key] = &[
    // PID-3 patient identifier list (CX, repeating): the first identifier's id number.
    Key {
        name: "id",
        path: "PID-3.1",
    },
    // PID-5 patient name (XPN, repeating): the whole first name, `FAMILY^GIVEN^MIDDLE…`.
    Key {
        name: "name",
        path: "PID-5(1)",
    },
    // XPN.1 is FN (surname & own surname prefix …): the surname.
    Key {
        name: "family",
        path: "PID-5.1.1",
    },
    Key {
        name: "given",
        path: "PID-5.2",
    },
    // PID-7 date/time of birth (TS): the time itself.
    Key {
        name: "dob",
        path: "PID-7.1",
    },
    // PID-8 administrative sex (table 0001).
    Key {
        name: "sex",
        path: "PID-8",
    },
    // PID-19 SSN number (kept for backward compatibility in v2.5; still sent).
    Key {
        name: "ssn",
        path: "PID-19",
    },
    // PID-11 patient address (XAD, repeating): XAD.6 country of the first address.
    Key {
        name: "country",
        path: "PID-11.6",
    },
];

/// `pv1.*` (HL7 v2.5 §3.4.3).
const PV1_KEYS: &[Key] = &[
    // PV1-2 patient class (table 0004): `I`, `O`, `E` …
    Key {
        name: "patient_class",
        path: "PV1-2",
    },
    // PV1-3 assigned patient location (PL): the whole location, `WARD^ROOM^BED^FACILITY`.
    Key {
        name: "assigned_location",
        path: "PV1-3(1)",
    },
    // PV1-7 attending doctor (XCN, repeating): the whole first one, `ID^FAMILY^GIVEN…`.
    Key {
        name: "attending_doctor",
        path: "PV1-7(1)",
    },
    // PV1-44 admit date/time (TS): the time itself.
    Key {
        name: "admit_datetime",
        path: "PV1-44.1",
    },
];

/// `obx.*` and each element of `obx_list` (HL7 v2.5 §7.4.2).
const OBX_KEYS: &[Key] = &[
    Key {
        name: "set_id",
        path: "OBX-1",
    },
    // OBX-2 value type (table 0125): `NM`, `ST`, `CE` …
    Key {
        name: "value_type",
        path: "OBX-2",
    },
    // OBX-3 observation identifier (CE): the identifier code.
    Key {
        name: "identifier",
        path: "OBX-3.1",
    },
    // OBX-5 observation value: the whole field, whatever its type (a number for `NM`).
    Key {
        name: "value",
        path: "OBX-5",
    },
    // OBX-6 units (CE): the unit code.
    Key {
        name: "unit",
        path: "OBX-6.1",
    },
    // OBX-11 observation result status (table 0085): `F`, `P`, `C` …
    Key {
        name: "status",
        path: "OBX-11",
    },
];

/// `peer.*`.
const PEER_KEYS: &[Key] = &[Key {
    name: "ip",
    path: "",
}];

/// `tls.*` (empty until TLS is served).
const TLS_KEYS: &[Key] = &[
    Key {
        name: "client_cn",
        path: "",
    },
    Key {
        name: "client_sans",
        path: "",
    },
];

impl Root {
    /// Every root, in the order extraction builds them.
    pub const ALL: [Root; 8] = [
        Root::Msh,
        Root::Pid,
        Root::Pv1,
        Root::Obx,
        Root::ObxList,
        Root::Segments,
        Root::Peer,
        Root::Tls,
    ];

    /// The name a rule writes.
    pub fn name(self) -> &'static str {
        match self {
            Root::Msh => "msh",
            Root::Pid => "pid",
            Root::Pv1 => "pv1",
            Root::Obx => "obx",
            Root::ObxList => "obx_list",
            Root::Segments => "segments",
            Root::Peer => "peer",
            Root::Tls => "tls",
        }
    }

    /// The root a rule's identifier names, if any.
    pub fn from_name(name: &str) -> Option<Root> {
        Root::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The keys of a map root (`obx_list` elements have `obx`'s); empty for `segments`.
    pub fn keys(self) -> &'static [Key] {
        match self {
            Root::Msh => MSH_KEYS,
            Root::Pid => PID_KEYS,
            Root::Pv1 => PV1_KEYS,
            Root::Obx | Root::ObxList => OBX_KEYS,
            Root::Segments => &[],
            Root::Peer => PEER_KEYS,
            Root::Tls => TLS_KEYS,
        }
    }

    /// Whether key `key` holds a string (it can then be read as a hidden variable of its
    /// own); `tls.client_sans` is a list, read through the whole `tls` map.
    pub fn key_is_string(self, key: usize) -> bool {
        !(self == Root::Tls && key == 1)
    }

    /// Whether `root.key` selects a key of this root (a list root has no keys to select).
    pub fn is_map(self) -> bool {
        !matches!(self, Root::ObxList | Root::Segments)
    }

    /// The segment a root reads, if it reads one.
    fn segment(self) -> Option<&'static [u8; 3]> {
        match self {
            Root::Msh => Some(b"MSH"),
            Root::Pid => Some(b"PID"),
            Root::Pv1 => Some(b"PV1"),
            Root::Obx | Root::ObxList => Some(b"OBX"),
            _ => None,
        }
    }
}

/// The location (for ERR-2) of the field behind `root.key`, when it reads one.
pub(crate) fn key_location(root: Root, key: usize) -> Option<Location> {
    let path: Path = root.keys().get(key)?.path.parse().ok()?;
    Some(path_location(&path))
}

/// The ERR-2 location of `path`: segment, occurrence, field (and repetition/component when
/// the path names them).
pub(crate) fn path_location(path: &Path) -> Location {
    Location {
        segment: path.segment,
        segment_sequence: path.segment_occurrence,
        field: path.field,
        repetition: path.repetition,
        component: path.component,
        subcomponent: path.subcomponent,
    }
}

/// What one rule set reads per message, each item the hidden variable a compiled expression
/// reads instead: `root.key` selections (`@k0`, `@k1` …), roots used whole (`msh` as a map),
/// probes (`field`, `fields`, `has`, `count` with their literal arguments: `@p0` …) and
/// constant lists (`["ADT", "ORU"]`: `@c0` …, built once at load). `@` cannot start a CEL
/// identifier, so no rule can name a hidden variable.
#[derive(Debug, Default)]
pub(crate) struct Needs {
    /// Bit `Root as usize` set: the root is read whole (a map or list of all its keys).
    pub whole: u16,
    /// The `root.key` selections, slot n read as `@k{n}`.
    pub keys: Vec<(Root, usize)>,
    /// The probes, slot n read as `@p{n}`.
    pub probes: Vec<Probe>,
    /// The constant lists, slot n read as `@c{n}`.
    pub consts: Vec<Box<dyn Val>>,
}

impl Needs {
    /// Marks `root` as read whole.
    pub fn whole(&mut self, root: Root) {
        self.whole |= 1 << root as usize;
    }
    /// The hidden variable of key `key` of `root`, added if new.
    pub fn key(&mut self, root: Root, key: usize) -> String {
        let n = slot(&mut self.keys, (root, key));
        format!("@k{n}")
    }
    /// The hidden variable of `probe`, added if new.
    pub fn probe(&mut self, probe: Probe) -> String {
        let n = slot(&mut self.probes, probe);
        format!("@p{n}")
    }
    /// The hidden variable of a constant.
    pub fn constant(&mut self, value: Box<dyn Val>) -> String {
        self.consts.push(value);
        format!("@c{}", self.consts.len() - 1)
    }
    /// What is read, described: `msh.control_id`, `obx_list`, `field(PID-3.1)`, `has(PV1)` …
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for root in Root::ALL {
            let keys = root.keys();
            if self.whole & (1 << root as usize) != 0 {
                if root.is_map() {
                    out.extend(keys.iter().map(|k| format!("{}.{}", root.name(), k.name)));
                } else {
                    out.push(root.name().to_owned());
                }
                continue;
            }
            for (k, key) in keys.iter().enumerate() {
                if self.keys.contains(&(root, k)) {
                    out.push(format!("{}.{}", root.name(), key.name));
                }
            }
        }
        for probe in &self.probes {
            out.push(match probe {
                Probe::Field(p) => format!("field({})", describe_path(p)),
                Probe::Fields { path, .. } => format!("fields({})", describe_path(path)),
                Probe::Has(id) => format!("has({})", String::from_utf8_lossy(id)),
                Probe::Count(id) => format!("count({})", String::from_utf8_lossy(id)),
            });
        }
        out
    }
}

/// The index of `item` in `slots`, pushed if absent.
fn slot<T: PartialEq>(slots: &mut Vec<T>, item: T) -> usize {
    match slots.iter().position(|s| *s == item) {
        Some(at) => at,
        None => {
            slots.push(item);
            slots.len() - 1
        }
    }
}

/// A path written back as text (`PID-3(2).1`).
fn describe_path(p: &Path) -> String {
    let mut s = String::from_utf8_lossy(&p.segment).into_owned();
    if p.segment_occurrence != 1 {
        s += &format!("({})", p.segment_occurrence);
    }
    s += &format!("-{}", p.field);
    if p.repetition != 0 {
        s += &format!("({})", p.repetition);
    }
    if p.component != 0 {
        s += &format!(".{}", p.component);
    }
    if p.subcomponent != 0 {
        s += &format!(".{}", p.subcomponent);
    }
    s
}

/// A call of one of mllpd's functions with its (literal) argument, decided at load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// `field("PID-3.1")`: the value at the path, empty when absent.
    Field(Path),
    /// `fields("OBX-5")`: the values at the path in every matching segment (only the named
    /// occurrence when the path names one) and every repetition (only the named one when the
    /// path names one).
    Fields {
        /// The path.
        path: Path,
        /// Whether the path named the segment occurrence (`OBX(2)-5`).
        one_segment: bool,
    },
    /// `has("PV1")`: whether a segment with that id exists.
    Has([u8; 3]),
    /// `count("OBX")`: how many segments have that id.
    Count([u8; 3]),
}

/// The connection facts a rule may read.
#[derive(Clone, Copy, Debug, Default)]
pub struct MessageContext<'c> {
    /// The peer's address (`peer.ip`); IPv4-mapped IPv6 addresses are shown as IPv4.
    pub peer_ip: Option<IpAddr>,
    /// The TLS client certificate's subject CN (`tls.client_cn`), once TLS is served.
    pub tls_client_cn: Option<&'c str>,
    /// The TLS client certificate's subject alternative names (`tls.client_sans`).
    pub tls_client_sans: &'c [String],
}

/// Text of a raw HL7 value: escape-decoded, then UTF-8 as is or Latin-1 byte for byte.
/// Borrows when nothing needed decoding.
pub(crate) fn text<'m>(raw: &'m [u8], delimiters: &Delimiters) -> Cow<'m, str> {
    match delimiters.unescape(raw) {
        Cow::Borrowed(bytes) => match std::str::from_utf8(bytes) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Owned(latin1(bytes)),
        },
        Cow::Owned(bytes) => match String::from_utf8(bytes) {
            Ok(s) => Cow::Owned(s),
            Err(e) => Cow::Owned(latin1(e.as_bytes())),
        },
    }
}

/// Bytes as Latin-1 (every byte is the code point of the same value): total, never fails.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// A boxed CEL string.
fn string<'v>(s: Cow<'v, str>) -> Box<dyn Val + 'v> {
    Box::new(CelString::from(s))
}

/// The value at `path` inside `segment`, as text; empty when absent.
fn segment_value<'m>(segment: Option<&Segment<'m>>, path: &Path) -> Cow<'m, str> {
    let Some(segment) = segment else {
        return Cow::Borrowed("");
    };
    let raw = segment
        .field_opt(usize::from(path.field))
        .and_then(|field| {
            if segment.has_id(b"MSH") && path.field <= 2 {
                // MSH-1/MSH-2 are the delimiters themselves: no parts to split.
                return Some(field);
            }
            path.select(field, segment.delimiters())
        })
        .unwrap_or(&[]);
    if segment.has_id(b"MSH") && path.field <= 2 {
        return Cow::Owned(latin1(raw));
    }
    text(raw, segment.delimiters())
}

/// The map of every key of `keys`, read from `segment` (a root a rule uses whole).
fn segment_map<'m>(
    segment: Option<&Segment<'m>>,
    keys: &[Key],
    paths: &[Path],
) -> Box<dyn Val + 'm> {
    let map: HashMap<CelMapKey<'m>, Box<dyn Val + 'm>> = keys
        .iter()
        .zip(paths)
        .map(|(key, path)| {
            (
                CelMapKey::from(key.name),
                string(segment_value(segment, path)),
            )
        })
        .collect();
    Box::new(CelMap::from(map))
}

/// The parsed paths of each root's keys, computed once at load.
#[derive(Clone, Debug)]
pub(crate) struct KeyPaths {
    /// Index by `Root as usize`; empty for roots that read no segment.
    paths: [Vec<Path>; 8],
}

impl KeyPaths {
    /// Parses every key path (they are constants; a bad one is a bug caught by tests).
    pub fn new() -> KeyPaths {
        let paths = Root::ALL.map(|root| {
            root.keys()
                .iter()
                .filter_map(|k| k.path.parse().ok())
                .collect()
        });
        KeyPaths { paths }
    }
}

/// The values of one message's hidden variables (and whole roots), looked up by name by
/// the CEL interpreter: no map or variable name is built per message.
pub(crate) struct Slots<'r, 'm> {
    /// `@k{n}`.
    keys: Vec<CelString<'m>>,
    /// `@p{n}`.
    probes: Vec<Box<dyn Val + 'm>>,
    /// The roots read whole, by `Root as usize`.
    roots: [Option<Box<dyn Val + 'm>>; 8],
    /// `@c{n}`, owned by the rule set.
    consts: &'r [Box<dyn Val>],
}

impl Slots<'_, '_> {
    /// The string of `@k{n}`.
    pub(crate) fn key(&self, n: usize) -> Option<&str> {
        self.keys.get(n).map(|s| s.inner())
    }

    /// The value of `@p{n}`.
    pub(crate) fn probe(&self, n: usize) -> Option<&dyn Val> {
        self.probes.get(n).map(|v| v.as_ref() as &dyn Val)
    }
}

impl cel::context::VariableResolver for Slots<'_, '_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let Some(hidden) = variable.strip_prefix('@') else {
            let root = Root::from_name(variable)?;
            return self.roots[root as usize]
                .as_deref()
                .map(|v| CowVal::Borrowed(v as &(dyn Val + 'b)));
        };
        let (kind, n) = hidden.split_at_checked(1)?;
        let n: usize = n.parse().ok()?;
        let value: &'b (dyn Val + 'b) = match kind {
            "k" => self.keys.get(n)?,
            "p" => self.probes.get(n)?.as_ref(),
            "c" => self.consts.get(n)?.as_ref(),
            _ => return None,
        };
        Some(CowVal::Borrowed(value))
    }
}

/// Reads what `needs` names from `message` and `connection`.
pub(crate) fn extract<'r, 'm>(
    needs: &'r Needs,
    paths: &KeyPaths,
    message: &Message<'m>,
    connection: &MessageContext<'m>,
) -> Slots<'r, 'm> {
    let delimiters = *message.delimiters();
    // The segment of each root, found once.
    let mut segments: [Option<Option<Segment<'m>>>; 8] = [None; 8];
    let mut segment_of = |root: Root| -> Option<Segment<'m>> {
        *segments[root as usize]
            .get_or_insert_with(|| root.segment().and_then(|id| message.segment(id, 1)))
    };
    let keys = needs
        .keys
        .iter()
        .map(|&(root, k)| {
            let text = match root {
                Root::Peer => Cow::Owned(peer_ip(connection)),
                Root::Tls => Cow::Borrowed(connection.tls_client_cn.unwrap_or("")),
                // MSH fields come from the offsets `Message::parse` cached: no scan.
                Root::Msh => match paths.paths[root as usize].get(k) {
                    Some(path) => text(message.get(path).unwrap_or(&[]), &delimiters),
                    None => Cow::Borrowed(""),
                },
                _ => match paths.paths[root as usize].get(k) {
                    Some(path) => segment_value(segment_of(root).as_ref(), path),
                    None => Cow::Borrowed(""),
                },
            };
            CelString::from(text)
        })
        .collect();
    let mut roots: [Option<Box<dyn Val + 'm>>; 8] = Default::default();
    for root in Root::ALL {
        if needs.whole & (1 << root as usize) == 0 {
            continue;
        }
        let value: Box<dyn Val + 'm> = match root {
            Root::Msh | Root::Pid | Root::Pv1 | Root::Obx => segment_map(
                segment_of(root).as_ref(),
                root.keys(),
                &paths.paths[root as usize],
            ),
            Root::ObxList => {
                let list: Vec<Box<dyn Val + 'm>> = message
                    .body_segments()
                    .filter(|s| s.has_id(b"OBX"))
                    .map(|s| segment_map(Some(&s), OBX_KEYS, &paths.paths[root as usize]))
                    .collect();
                Box::new(CelList::from(list))
            }
            Root::Segments => {
                let list: Vec<Box<dyn Val + 'm>> = message
                    .segments()
                    .map(|s| string(text(s.id(), &delimiters)))
                    .collect();
                Box::new(CelList::from(list))
            }
            Root::Peer => {
                let mut map: HashMap<CelMapKey<'m>, Box<dyn Val + 'm>> = HashMap::new();
                map.insert(
                    CelMapKey::from("ip"),
                    string(Cow::Owned(peer_ip(connection))),
                );
                Box::new(CelMap::from(map))
            }
            Root::Tls => {
                let mut map: HashMap<CelMapKey<'m>, Box<dyn Val + 'm>> = HashMap::new();
                let cn = connection.tls_client_cn.unwrap_or("");
                map.insert(CelMapKey::from("client_cn"), string(Cow::Borrowed(cn)));
                map.insert(CelMapKey::from("client_sans"), tls_sans(connection));
                Box::new(CelMap::from(map))
            }
        };
        roots[root as usize] = Some(value);
    }
    let probes = needs
        .probes
        .iter()
        .map(|probe| match probe {
            // A field of a root's segment (`field("PV1-3.3")` next to `pv1.patient_class`):
            // the segment found for the root, not a second scan of the message.
            Probe::Field(path) if path.segment_occurrence == 1 => {
                let root = [Root::Msh, Root::Pid, Root::Pv1, Root::Obx]
                    .into_iter()
                    .find(|r| r.segment() == Some(&path.segment));
                match root {
                    Some(root) => string(segment_value(segment_of(root).as_ref(), path)),
                    None => probe_value(probe, message),
                }
            }
            _ => probe_value(probe, message),
        })
        .collect();
    Slots {
        keys,
        probes,
        roots,
        consts: &needs.consts,
    }
}

/// `peer.ip`: the address, IPv4-mapped IPv6 shown as IPv4; "" when unknown.
fn peer_ip(connection: &MessageContext<'_>) -> String {
    connection
        .peer_ip
        .map(|ip| ip.to_canonical().to_string())
        .unwrap_or_default()
}

/// `tls.client_sans`: the list of names.
fn tls_sans<'m>(connection: &MessageContext<'m>) -> Box<dyn Val + 'm> {
    let sans: Vec<Box<dyn Val + 'm>> = connection
        .tls_client_sans
        .iter()
        .map(|s| string(Cow::Borrowed(s.as_str())))
        .collect();
    Box::new(CelList::from(sans))
}

/// The value of one probe on `message`.
fn probe_value<'m>(probe: &Probe, message: &Message<'m>) -> Box<dyn Val + 'm> {
    let delimiters = message.delimiters();
    match probe {
        Probe::Field(path) => {
            let segment = message.segment(&path.segment, usize::from(path.segment_occurrence));
            string(segment_value(segment.as_ref(), path))
        }
        Probe::Fields { path, one_segment } => {
            let mut values: Vec<Box<dyn Val + 'm>> = Vec::new();
            let segments: Vec<Segment<'m>> = if *one_segment {
                message
                    .segment(&path.segment, usize::from(path.segment_occurrence))
                    .into_iter()
                    .collect()
            } else {
                message
                    .segments()
                    .filter(|s| s.has_id(&path.segment))
                    .collect()
            };
            // One value per matching segment and repetition: an absent field or component
            // reads as "" like everywhere else, so a rule sees every segment.
            for segment in &segments {
                let field = segment.field_opt(usize::from(path.field)).unwrap_or(&[]);
                if segment.has_id(b"MSH") && path.field <= 2 {
                    values.push(string(Cow::Owned(latin1(field))));
                    continue;
                }
                let value =
                    |p: &Path| string(text(p.select(field, delimiters).unwrap_or(&[]), delimiters));
                if path.repetition != 0 {
                    values.push(value(path));
                    continue;
                }
                let mut one = *path;
                for r in 1..=u16::MAX {
                    if delimiters.repetition_of(field, usize::from(r)).is_none() {
                        break;
                    }
                    one.repetition = r;
                    values.push(value(&one));
                }
            }
            Box::new(CelList::from(values))
        }
        Probe::Has(id) => Box::new(CelBool::from(message.segments().any(|s| s.has_id(id)))),
        Probe::Count(id) => {
            let n = message.segments().filter(|s| s.has_id(id)).count();
            Box::new(CelInt::from(i64::try_from(n).unwrap_or(i64::MAX)))
        }
    }
}
