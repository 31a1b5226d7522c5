//! A minimal blocking Redis client for tests (RESP2 over TCP): enough to fill a server, save,
//! restore and compare digests, without pulling a client library into the test build.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn text(&self) -> String {
        match self {
            Reply::Status(s) | Reply::Error(s) => s.clone(),
            Reply::Int(i) => i.to_string(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            other => format!("{other:?}"),
        }
    }
}

pub struct Redis {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    pub url: String,
}

impl Redis {
    /// Connects to `redis://host:port` (the test servers have no password).
    pub fn connect(url: &str) -> Redis {
        let addr = url.trim_start_matches("redis://").trim_end_matches('/');
        let writer = TcpStream::connect(addr).unwrap_or_else(|e| {
            panic!(
                "cannot connect to the test Redis at {url}: {e}.\n\
                 Start it with: eval \"$(scripts/services.sh start)\" (or run scripts/test.sh)"
            )
        });
        Redis {
            reader: BufReader::new(writer.try_clone().unwrap()),
            writer,
            url: url.to_string(),
        }
    }

    /// Sends several commands at once, then reads their replies (a pipeline).
    pub fn pipeline(&mut self, cmds: &[Vec<Vec<u8>>]) -> Vec<Reply> {
        let mut out = Vec::new();
        for args in cmds {
            out.extend(format!("*{}\r\n", args.len()).into_bytes());
            for a in args {
                out.extend(format!("${}\r\n", a.len()).into_bytes());
                out.extend(a);
                out.extend(b"\r\n");
            }
        }
        self.writer.write_all(&out).unwrap();
        cmds.iter().map(|_| self.read_reply()).collect()
    }

    pub fn cmd(&mut self, args: &[&[u8]]) -> Reply {
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
        self.pipeline(&[args]).remove(0)
    }

    /// A command given as space-separated words; panics on an error reply.
    pub fn ok(&mut self, words: &str) -> Reply {
        let args: Vec<&[u8]> = words.split(' ').map(str::as_bytes).collect();
        let r = self.cmd(&args);
        assert!(
            !matches!(r, Reply::Error(_)),
            "{words} on {}: {r:?}",
            self.url
        );
        r
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.reader.read_line(&mut l).unwrap();
        l.trim_end_matches("\r\n").to_string()
    }

    fn read_reply(&mut self) -> Reply {
        let l = self.line();
        let (kind, rest) = l.split_at(1);
        match kind {
            "+" => Reply::Status(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(rest.parse().unwrap()),
            "$" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return Reply::Bulk(None);
                }
                let mut b = vec![0u8; n as usize + 2];
                self.reader.read_exact(&mut b).unwrap();
                b.truncate(n as usize);
                Reply::Bulk(Some(b))
            }
            "*" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    return Reply::Array(None);
                }
                Reply::Array(Some((0..n).map(|_| self.read_reply()).collect()))
            }
            other => panic!("unexpected reply type {other:?} from {}", self.url),
        }
    }
}

/// The source and restore-target test servers (scripts/services.sh).
pub fn redis_urls() -> (String, String) {
    (
        std::env::var("LIFEBOAT_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:24379".into()),
        std::env::var("LIFEBOAT_TEST_REDIS_TARGET_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:24380".into()),
    )
}
