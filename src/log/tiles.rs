//! C2SP tlog-tiles paths and contents: hash tiles `tile/<L>/<N>[.p/<W>]` and entry bundles
//! `tile/entries/<N>[.p/<W>]`, height 8 (256 hashes or entries per full tile).

use sqlx::AnyConnection;
use tlog_tiles::Tile;

use super::{Log, LogError, hashes};
use crate::store;
use crate::store::log::Table;

/// Tile height fixed by C2SP tlog-tiles.
pub const HEIGHT: u8 = 8;
/// Entries or hashes per full tile.
pub const WIDTH: u64 = 1 << HEIGHT;

/// A parsed tile request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileRequest {
    /// Hash tile at level `level`, index `index`, `width` hashes.
    Hashes {
        /// Level L.
        level: u8,
        /// Index N.
        index: u64,
        /// Width W (256 for a full tile).
        width: u32,
    },
    /// Entry bundle `index` with `width` entries.
    Entries {
        /// Index N.
        index: u64,
        /// Width W.
        width: u32,
    },
}

/// Highest hash-tile level: 8 * 7 = 56 tree levels cover every u64-sized log, and keeps
/// `8 * L` within the `u8` that `tlog_tiles` computes it in.
const MAX_LEVEL: u8 = 7;

impl TileRequest {
    /// Parses the path after `/log/` (`tile/…`); `None` for anything that is not the
    /// canonical spelling of a tile. Written here rather than delegated because the
    /// Go-compatible parser in `tlog_tiles` panics on some inputs (`.p/0`), and this is
    /// reachable from the network.
    pub fn parse(path: &str) -> Option<Self> {
        let rest = path.strip_prefix("tile/")?;
        let (kind, rest) = rest.split_once('/')?;
        let (number, width) = match rest.split_once(".p/") {
            // A partial tile has 1..=255 elements; a full one has no `.p/` suffix.
            Some((n, w)) => (
                n,
                parse_canonical_u64(w)
                    .filter(|w| *w < WIDTH)
                    .and_then(|w| u32::try_from(w).ok())?,
            ),
            None => (rest, WIDTH as u32),
        };
        if width == 0 || u64::from(width) > WIDTH {
            return None;
        }
        let index = parse_index(number)?;
        if kind == "entries" {
            return Some(Self::Entries { index, width });
        }
        let level = u8::try_from(parse_canonical_u64(kind)?).ok()?;
        (level <= MAX_LEVEL).then_some(Self::Hashes {
            level,
            index,
            width,
        })
    }

    /// True for a full (immutable, cacheable) tile.
    pub fn is_full(&self) -> bool {
        let width = match self {
            Self::Hashes { width, .. } | Self::Entries { width, .. } => *width,
        };
        u64::from(width) == WIDTH
    }
}

impl Log {
    /// The bytes of a tile, or `None` when the tree of `size` entries does not have it.
    pub async fn tile(
        &self,
        conn: &mut AnyConnection,
        request: TileRequest,
        size: u64,
    ) -> Result<Option<Vec<u8>>, LogError> {
        match request {
            TileRequest::Hashes {
                level,
                index,
                width,
            } => {
                // Hashes at tree level 8L that exist: complete subtrees of 256^L entries.
                let available = size
                    .checked_shr(u32::from(HEIGHT) * u32::from(level))
                    .unwrap_or(0);
                if index.saturating_mul(WIDTH).saturating_add(u64::from(width)) > available {
                    return Ok(None);
                }
                let tile = Tile::new(HEIGHT, level, index, width, false);
                let data = hashes::two_phase(conn, |r| Ok(tile.read_data(&*r)?)).await?;
                Ok(Some(data))
            }
            TileRequest::Entries { index, width } => {
                let first = index.saturating_mul(WIDTH);
                if first.saturating_add(u64::from(width)) > size {
                    return Ok(None);
                }
                let rows = store::log::range(
                    conn,
                    Table::Entries,
                    i64::try_from(first).unwrap_or(i64::MAX),
                    i64::try_from(first + u64::from(width)).unwrap_or(i64::MAX),
                    i64::from(width),
                )
                .await?;
                let mut out = Vec::new();
                for (_, entry) in rows {
                    let len = u16::try_from(entry.len())
                        .map_err(|_| LogError::Tlog("entry longer than 65535 bytes".into()))?;
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(&entry);
                }
                Ok(Some(out))
            }
        }
    }
}

/// A decimal number without sign or leading zeros (except `0` itself).
fn parse_canonical_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// The tile index as tlog-tiles spells it: three-digit groups, all but the last `x`-prefixed.
fn parse_index(s: &str) -> Option<u64> {
    let groups: Vec<&str> = s.split('/').collect();
    let (last, leading) = groups.split_last()?;
    let mut n: u64 = 0;
    for (i, g) in leading
        .iter()
        .map(|g| g.strip_prefix('x'))
        .chain([Some(*last)])
        .enumerate()
    {
        let g = g?;
        if g.len() != 3 || !g.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // No leading zero groups: the spelling of N is unique.
        if i == 0 && !leading.is_empty() && g == "000" {
            return None;
        }
        n = n.checked_mul(1000)?.checked_add(g.parse::<u64>().ok()?)?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_c2sp_tile_paths() {
        assert_eq!(
            TileRequest::parse("tile/0/000"),
            Some(TileRequest::Hashes {
                level: 0,
                index: 0,
                width: 256
            })
        );
        assert_eq!(
            TileRequest::parse("tile/1/x001/234.p/5"),
            Some(TileRequest::Hashes {
                level: 1,
                index: 1234,
                width: 5
            })
        );
        assert_eq!(
            TileRequest::parse("tile/entries/x002/001.p/17"),
            Some(TileRequest::Entries {
                index: 2001,
                width: 17
            })
        );
        assert_eq!(
            TileRequest::parse("tile/7/x018/x446/x744/x073/x709/x551/615"),
            Some(TileRequest::Hashes {
                level: 7,
                index: 18_446_744_073_709_551_615,
                width: 256
            })
        );
        for bad in [
            "tile/0/1",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/07",
            "tile/entries/abc",
            "checkpoint",
            "tile/8/0/000",
            "tile/00/000",
            "tile/0/x000/001",
            "tile/0/x018/x446/x744/x073/x709/x551/616",
            "tile/0/001/002",
            "tile/0/x001",
        ] {
            assert_eq!(TileRequest::parse(bad), None, "{bad}");
        }
    }
}
