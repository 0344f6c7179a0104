//! The handshake phase of one NBD connection: greeting, client flags, then
//! options one at a time until the client picks the export (or leaves).
//! See [`crate::protocol`] for the messages and what each option gets.

use std::io::{Read, Write};

use crate::error::ConnectionError;
use crate::protocol::{
    BlockSizes, ClientFlags, ClientOption, ExportNameReply, Greeting, Info, OptionHeader, OptionReply, ReplyType,
    CLIENT_FLAGS_LEN, MAX_OPTION_DATA, OPTION_HEADER_LEN, OPT_STARTTLS, OPT_STRUCTURED_REPLY, TRANSMISSION_FLAGS,
};

/// More options than any real client sends before choosing an export.
pub(crate) const MAX_OPTIONS: usize = 256;

/// The one export a server offers.
#[derive(Debug, Clone)]
pub(crate) struct Export {
    /// Its name: the VM's name.
    pub(crate) name: String,
    /// Its size in bytes.
    pub(crate) size: u64,
    /// Its block size constraints.
    pub(crate) block_sizes: BlockSizes,
}

impl Export {
    /// Whether `name` means this export: its own name, or the empty name of
    /// NBD's default export.
    fn answers_to(&self, name: &str) -> bool {
        name.is_empty() || name == self.name
    }
}

/// How a handshake ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Negotiated {
    /// The client chose the export: transmission follows.
    Transmission,
    /// The client sent `NBD_OPT_ABORT`.
    Aborted,
}

/// Runs the handshake with the client `peer`.
///
/// # Errors
/// [`ConnectionError`] when the client hangs up, breaks the framing, sets
/// flags the server did not offer, asks `NBD_OPT_EXPORT_NAME` for another
/// export, or sends more than [`MAX_OPTIONS`] options. Anything else wrong
/// with an option is answered with an error reply and the handshake goes on.
pub(crate) fn negotiate(
    reader: &mut impl Read,
    writer: &mut impl Write,
    export: &Export,
    peer: &str,
) -> Result<Negotiated, ConnectionError> {
    let io = |during| move |source| ConnectionError::Io { peer: peer.to_owned(), during, source };
    let broken = |source| ConnectionError::Protocol { peer: peer.to_owned(), source };
    send(writer, &Greeting::server().encode()).map_err(io("sending the greeting"))?;
    let mut flags = [0; CLIENT_FLAGS_LEN];
    reader.read_exact(&mut flags).map_err(io("reading the client flags"))?;
    let flags = ClientFlags::decode(&flags).map_err(broken)?;
    if !flags.fixed_newstyle {
        return Err(ConnectionError::NotFixedNewstyle { peer: peer.to_owned(), flags: flags.bits() });
    }
    for _ in 0..MAX_OPTIONS {
        let mut header = [0; OPTION_HEADER_LEN];
        reader.read_exact(&mut header).map_err(io("reading an option"))?;
        let header = OptionHeader::decode(&header).map_err(broken)?;
        if header.len > MAX_OPTION_DATA {
            // Read and drop it in small pieces: the next option follows it.
            let len = u64::from(header.len);
            let dropped = std::io::copy(&mut reader.by_ref().take(len), &mut std::io::sink())
                .map_err(io("skipping oversized option data"))?;
            if dropped < len {
                return Err(io("skipping oversized option data")(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let message = format!("{} bytes of option data, the limit is {MAX_OPTION_DATA}", header.len);
            let reply = OptionReply::error(header.option, ReplyType::ErrTooBig, &message);
            send(writer, &reply.encode()).map_err(io("answering an option"))?;
            continue;
        }
        let mut data = vec![0; header.len as usize];
        reader.read_exact(&mut data).map_err(io("reading option data"))?;
        let replies = match ClientOption::decode(&header, &data) {
            Err(e) => {
                tracing::warn!(peer, option = header.option, "invalid option: {e}");
                vec![OptionReply::error(header.option, ReplyType::ErrInvalid, &e.to_string())]
            }
            Ok(ClientOption::ExportName(name)) => {
                if !export.answers_to(&name) {
                    return Err(ConnectionError::UnknownExport {
                        peer: peer.to_owned(),
                        name,
                        export: export.name.clone(),
                    });
                }
                let reply = ExportNameReply::new(export.size, TRANSMISSION_FLAGS).encode(flags.no_zeroes);
                send(writer, &reply).map_err(io("answering NBD_OPT_EXPORT_NAME"))?;
                return Ok(Negotiated::Transmission);
            }
            Ok(ClientOption::Abort) => {
                // The client may already be gone; it need not read the answer.
                if let Err(e) = send(writer, &OptionReply::ack(header.option).encode()) {
                    tracing::debug!(peer, "acknowledging NBD_OPT_ABORT: {e}");
                }
                return Ok(Negotiated::Aborted);
            }
            Ok(ClientOption::List) => vec![OptionReply::server(&export.name), OptionReply::ack(header.option)],
            Ok(ClientOption::Info(query) | ClientOption::Go(query)) if !export.answers_to(&query.name) => {
                let message = format!("no export {:?}: this server exports {:?}", query.name, export.name);
                vec![OptionReply::error(header.option, ReplyType::ErrUnknown, &message)]
            }
            Ok(option @ (ClientOption::Info(_) | ClientOption::Go(_))) => {
                // Block sizes are sent whether asked for or not, as the spec
                // allows; a client that did not ask may ignore them.
                let replies = [
                    OptionReply::info(header.option, &Info::Export { size: export.size, flags: TRANSMISSION_FLAGS }),
                    OptionReply::info(header.option, &Info::BlockSize(export.block_sizes)),
                    OptionReply::ack(header.option),
                ];
                send(writer, &replies.iter().flat_map(OptionReply::encode).collect::<Vec<u8>>())
                    .map_err(io("answering NBD_OPT_INFO/GO"))?;
                if matches!(option, ClientOption::Go(_)) {
                    return Ok(Negotiated::Transmission);
                }
                continue;
            }
            Ok(ClientOption::Unsupported(code)) => {
                vec![OptionReply::error(code, ReplyType::ErrUnsup, unsupported_reason(code))]
            }
        };
        send(writer, &replies.iter().flat_map(OptionReply::encode).collect::<Vec<u8>>())
            .map_err(io("answering an option"))?;
    }
    Err(ConnectionError::TooManyOptions { peer: peer.to_owned(), limit: MAX_OPTIONS })
}

/// Runs the handshake on `input`, every byte a client sends, for an export
/// `name` of `size` bytes with the default block size, and appends what the
/// server sends to `output`: `Ok(true)` when the client chose the export
/// (transmission would follow), `Ok(false)` when it sent `NBD_OPT_ABORT`.
/// The option haggling of a connection without its socket, for the fuzz
/// target `nbd_handshake` (in `fuzz/`, outside the workspace).
///
/// # Errors
/// As a connection's handshake; the end of `input` is a client that hung up.
pub fn negotiate_bytes(input: &[u8], output: &mut Vec<u8>, name: &str, size: u64) -> Result<bool, ConnectionError> {
    let block_sizes = BlockSizes::new(1, crate::DEFAULT_BLOCK_SIZE, crate::protocol::MAX_PAYLOAD)
        .expect("the default block sizes follow the spec's rules");
    let export = Export { name: name.to_owned(), size, block_sizes };
    let mut reader = input;
    negotiate(&mut reader, output, &export, "fuzz").map(|end| end == Negotiated::Transmission)
}

/// Why an option is refused, for the client's user.
fn unsupported_reason(code: u32) -> &'static str {
    match code {
        OPT_STRUCTURED_REPLY => "cownetdisk sends simple replies only",
        OPT_STARTTLS => "cownetdisk does not speak TLS: keep its socket local",
        _ => "cownetdisk does not support this option",
    }
}

/// Writes `bytes` and flushes them to the client.
fn send(writer: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    writer.write_all(bytes)?;
    writer.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProtocolError;
    use crate::protocol::{
        ExportQuery, OptionReplyHeader, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, GREETING_LEN, INFO_BLOCK_SIZE,
        INFO_EXPORT, MAX_PAYLOAD, OPTION_REPLY_HEADER_LEN, OPT_ABORT, OPT_GO, OPT_INFO, OPT_LIST,
    };

    fn export() -> Export {
        Export { name: "vm1".into(), size: 16 << 20, block_sizes: BlockSizes::new(1, 4096, MAX_PAYLOAD).unwrap() }
    }

    /// Runs a handshake on scripted client bytes; returns its result and
    /// the server's option replies (after the checked greeting), plus any
    /// bytes after them.
    fn run(
        flags: ClientFlags,
        options: &[Vec<u8>],
    ) -> (Result<Negotiated, ConnectionError>, Vec<OptionReply>, Vec<u8>) {
        let mut input = flags.encode().to_vec();
        for option in options {
            input.extend_from_slice(option);
        }
        let mut output = Vec::new();
        let result = negotiate(&mut input.as_slice(), &mut output, &export(), "test");
        let greeting = Greeting::decode(output[..GREETING_LEN].try_into().unwrap()).unwrap();
        assert_eq!(greeting.flags, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        let mut rest = &output[GREETING_LEN..];
        let mut replies = Vec::new();
        while rest.len() >= OPTION_REPLY_HEADER_LEN {
            let Ok(header) = OptionReplyHeader::decode(rest[..OPTION_REPLY_HEADER_LEN].try_into().unwrap()) else {
                break;
            };
            let end = OPTION_REPLY_HEADER_LEN + header.len as usize;
            replies.push(OptionReply::decode(&header, &rest[OPTION_REPLY_HEADER_LEN..end]).unwrap());
            rest = &rest[end..];
        }
        (result, replies, rest.to_vec())
    }

    fn fixed() -> ClientFlags {
        ClientFlags::new(true, true)
    }

    fn kinds(replies: &[OptionReply]) -> Vec<ReplyType> {
        replies.iter().map(|r| r.kind).collect()
    }

    fn query(name: &str) -> ExportQuery {
        ExportQuery { name: name.into(), requests: vec![INFO_BLOCK_SIZE] }
    }

    #[test]
    fn go_describes_the_export_then_starts_transmission() {
        let (result, replies, rest) = run(fixed(), &[ClientOption::Go(query("")).encode()]);
        assert_eq!(result.unwrap(), Negotiated::Transmission);
        assert_eq!(kinds(&replies), [ReplyType::Info, ReplyType::Info, ReplyType::Ack]);
        assert!(replies.iter().all(|r| r.option == OPT_GO));
        assert_eq!(Info::decode(&replies[0].data).unwrap(), Info::Export { size: 16 << 20, flags: TRANSMISSION_FLAGS });
        assert_eq!(Info::decode(&replies[1].data).unwrap(), Info::BlockSize(export().block_sizes));
        assert!(rest.is_empty(), "no padding after NBD_OPT_GO");
    }

    #[test]
    fn refused_options_are_answered_and_negotiation_goes_on() {
        let options = [
            ClientOption::Unsupported(OPT_STRUCTURED_REPLY).encode(),
            ClientOption::Unsupported(0xdead).encode(),
            ClientOption::List.encode(),
            ClientOption::Info(ExportQuery { name: "vm1".into(), requests: vec![INFO_EXPORT] }).encode(),
            ClientOption::Info(query("vm2")).encode(),
            ClientOption::Abort.encode(),
        ];
        let (result, replies, _) = run(fixed(), &options);
        assert_eq!(result.unwrap(), Negotiated::Aborted);
        use ReplyType::*;
        assert_eq!(kinds(&replies), [ErrUnsup, ErrUnsup, Server, Ack, Info, Info, Ack, ErrUnknown, Ack]);
        assert_eq!((replies[0].option, replies[1].option), (OPT_STRUCTURED_REPLY, 0xdead));
        assert_eq!(replies[2].data, OptionReply::server("vm1").data);
        assert_eq!((replies[4].option, replies[8].option), (OPT_INFO, OPT_ABORT));
    }

    #[test]
    fn export_name_answers_with_or_without_the_zero_padding() {
        for no_zeroes in [true, false] {
            let flags = ClientFlags::new(true, no_zeroes);
            let (result, replies, rest) = run(flags, &[ClientOption::ExportName("vm1".into()).encode()]);
            assert_eq!(result.unwrap(), Negotiated::Transmission);
            assert!(replies.is_empty());
            assert_eq!(ExportNameReply::decode(&rest).unwrap(), ExportNameReply::new(16 << 20, TRANSMISSION_FLAGS));
            assert_eq!(rest.len(), if no_zeroes { 10 } else { 134 });
        }
    }

    #[test]
    fn an_unknown_export_is_refused_by_go_and_ends_export_name() {
        let (result, replies, _) =
            run(fixed(), &[ClientOption::Go(query("other")).encode(), ClientOption::Abort.encode()]);
        assert_eq!(result.unwrap(), Negotiated::Aborted);
        assert_eq!(kinds(&replies), [ReplyType::ErrUnknown, ReplyType::Ack]);
        let (result, _, rest) = run(fixed(), &[ClientOption::ExportName("other".into()).encode()]);
        assert!(matches!(result, Err(ConnectionError::UnknownExport { .. })), "{result:?}");
        assert!(rest.is_empty());
    }

    #[test]
    fn invalid_and_oversized_options_get_error_replies_and_the_stream_stays_in_step() {
        let mut list_with_data = OptionHeader::new(OPT_LIST, 2).encode().to_vec();
        list_with_data.extend_from_slice(b"xy");
        let mut huge = OptionHeader::new(0x77, MAX_OPTION_DATA + 1).encode().to_vec();
        huge.resize(huge.len() + MAX_OPTION_DATA as usize + 1, 0xAB);
        let (result, replies, _) = run(fixed(), &[list_with_data, huge, ClientOption::Abort.encode()]);
        assert_eq!(result.unwrap(), Negotiated::Aborted);
        assert_eq!(kinds(&replies), [ReplyType::ErrInvalid, ReplyType::ErrTooBig, ReplyType::Ack]);
    }

    #[test]
    fn negotiate_bytes_runs_the_same_handshake() {
        let mut input = fixed().encode().to_vec();
        input.extend_from_slice(&ClientOption::Go(query("vm1")).encode());
        let mut output = Vec::new();
        assert!(negotiate_bytes(&input, &mut output, "vm1", 16 << 20).unwrap());
        assert_eq!(output[..GREETING_LEN], Greeting::server().encode());
        let mut output = Vec::new();
        let result = negotiate_bytes(&input[..6], &mut output, "vm1", 16 << 20);
        assert!(matches!(result, Err(ConnectionError::Io { .. })), "a client that hung up: {result:?}");
    }

    #[test]
    fn broken_clients_are_dropped() {
        let (result, replies, _) = run(ClientFlags::new(false, false), &[]);
        assert!(matches!(result, Err(ConnectionError::NotFixedNewstyle { flags: 0, .. })), "{result:?}");
        assert!(replies.is_empty());

        let mut input = 0x8000_0001u32.to_be_bytes().to_vec();
        input.extend_from_slice(&ClientOption::Abort.encode());
        let result = negotiate(&mut input.as_slice(), &mut Vec::new(), &export(), "test");
        let Err(ConnectionError::Protocol { source, .. }) = result else { panic!("{result:?}") };
        assert_eq!(source, ProtocolError::UnknownClientFlags(0x8000_0001));

        let mut bad_magic = ClientOption::List.encode();
        bad_magic[0] = b'X';
        let (result, _, _) = run(fixed(), &[bad_magic]);
        assert!(matches!(result, Err(ConnectionError::Protocol { .. })), "{result:?}");

        let (result, _, _) = run(fixed(), &[ClientOption::List.encode()]);
        assert!(matches!(result, Err(ConnectionError::Io { .. })), "hanging up mid-handshake: {result:?}");

        let many = vec![ClientOption::List.encode(); MAX_OPTIONS + 1];
        let (result, replies, _) = run(fixed(), &many);
        assert!(matches!(result, Err(ConnectionError::TooManyOptions { .. })), "{result:?}");
        assert_eq!(replies.len(), 2 * MAX_OPTIONS);
    }
}
