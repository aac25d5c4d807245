//! `RedisHistory`: each channel's stream in Redis, so a client can resume on any node.
//!
//! A channel has a hash `{prefix}:m:{channel}` (epoch, top offset) and a stream
//! `{prefix}:h:{channel}` whose entry ids are `0-<offset>`. One Lua script assigns the next offset,
//! appends (trimmed to the namespace's size) and publishes the publication to the channel's
//! pub/sub channel, all at once: Redis runs scripts one at a time, so every node receives a
//! channel's publications in offset order, whichever node published them. The publishing node
//! receives its own copy too (`echo`), which is how it learns the order.

use std::sync::Arc;

use async_trait::async_trait;
use redis::Value as RValue;

use super::{now_ms, wire, RedisLink};
use crate::{
    errors::{ErrorCode, HubError},
    history::{new_epoch, History, HistoryOptions, HistoryRead},
    protocol::{Publication, StreamPosition},
};

const APPEND: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
end
local top = redis.call('HINCRBY', KEYS[1], 'top', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], '0-' .. top, 'e', ARGV[5], 't', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call(ARGV[7], ARGV[6], top .. ':' .. ARGV[5])
return {top, epoch}
"#;

const READ: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
local top = tonumber(redis.call('HGET', KEYS[1], 'top'))
local entries = redis.call('XRANGE', KEYS[2], '0-' .. (tonumber(ARGV[1]) + 1), '+', 'COUNT', ARGV[2])
return {epoch, top, entries}
"#;

pub struct RedisHistory {
    link: Arc<RedisLink>,
    append: redis::Script,
    read: redis::Script,
}

impl RedisHistory {
    pub fn new(link: Arc<RedisLink>) -> RedisHistory {
        RedisHistory { link, append: redis::Script::new(APPEND), read: redis::Script::new(READ) }
    }
}

fn bad_reply(what: &str) -> HubError {
    HubError::new(ErrorCode::Internal, format!("unexpected redis reply: {what}"))
}

#[async_trait]
impl History for RedisHistory {
    async fn append(
        &self,
        publication: Publication,
        opts: HistoryOptions,
    ) -> Result<(Arc<Publication>, StreamPosition), HubError> {
        let env = wire::Envelope {
            origin: self.link.node_id.clone(),
            echo: true,
            msg: wire::WireMsg::from_bus(&crate::bus::BusMessage::Publication(Arc::new(Publication::new(
                publication.channel.clone(),
                0,
                publication.event.clone(),
                publication.data.clone(),
                publication.from.clone(),
            )))),
        };
        let channel = publication.channel.clone();
        let mut inv = self.append.prepare_invoke();
        inv.key(self.link.key("m", &channel))
            .key(self.link.key("h", &channel))
            .arg(new_epoch())
            .arg(opts.size)
            .arg(opts.ttl.as_millis() as u64)
            .arg(now_ms())
            .arg(wire::encode_body(&env))
            .arg(self.link.channel_key(&channel))
            .arg(self.link.publish_command());
        let (top, epoch): (u64, String) = self.link.invoke(&inv).await?;
        let mut publication = publication;
        publication.offset = top;
        Ok((Arc::new(publication), StreamPosition { offset: top, epoch }))
    }

    async fn read(
        &self,
        channel: &str,
        since: Option<&StreamPosition>,
        limit: usize,
        opts: HistoryOptions,
    ) -> Result<HistoryRead, HubError> {
        let after = since.map(|s| s.offset).unwrap_or(0);
        let mut inv = self.read.prepare_invoke();
        inv.key(self.link.key("m", channel))
            .key(self.link.key("h", channel))
            .arg(after)
            .arg(limit.max(1))
            .arg(opts.ttl.as_millis() as u64)
            .arg(new_epoch());
        let (epoch, top, entries): (String, u64, RValue) = self.link.invoke(&inv).await?;
        let position = StreamPosition { offset: top, epoch: epoch.clone() };
        if let Some(s) = since {
            if s.epoch != epoch || s.offset > top {
                return Ok(HistoryRead { position, publications: Vec::new(), complete: false });
            }
        }
        let oldest_allowed = now_ms().saturating_sub(opts.ttl.as_millis() as u64);
        let mut publications = Vec::new();
        let RValue::Array(entries) = entries else { return Err(bad_reply("XRANGE")) };
        for entry in entries.into_iter().take(limit) {
            let (offset, env, at) = parse_entry(entry).ok_or_else(|| bad_reply("stream entry"))?;
            if at < oldest_allowed {
                continue;
            }
            if let wire::WireMsg::Pub { event, data, from, .. } = env.msg {
                publications.push(Arc::new(Publication::new(Arc::from(channel), offset, event, data, from)));
            }
        }
        let first = publications.first().map(|p| p.offset);
        let last = publications.last().map(|p| p.offset).unwrap_or(after);
        let complete = since.is_some() && (after == top || (first == Some(after + 1) && last == top));
        Ok(HistoryRead { position, publications, complete })
    }

    fn broadcasts(&self) -> bool {
        true
    }
}

/// `[id, [field, value, ...]]` → (offset, envelope, time in ms).
fn parse_entry(entry: RValue) -> Option<(u64, wire::Envelope, u64)> {
    let RValue::Array(mut parts) = entry else { return None };
    if parts.len() != 2 {
        return None;
    }
    let fields = parts.pop()?;
    let id: String = redis::from_redis_value(parts.pop()?).ok()?;
    let offset: u64 = id.strip_prefix("0-")?.parse().ok()?;
    let fields: Vec<(String, Vec<u8>)> = redis::from_redis_value(fields).ok()?;
    let mut env = None;
    let mut at = 0;
    for (name, value) in fields {
        match name.as_str() {
            "e" => {
                let mut framed = b"0:".to_vec();
                framed.extend(value);
                env = wire::decode(&framed);
            }
            "t" => at = std::str::from_utf8(&value).ok()?.parse().ok()?,
            _ => {}
        }
    }
    Some((offset, env?, at))
}
