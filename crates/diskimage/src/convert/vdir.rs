//! VDI reader (dynamic and static). Blocks are visited in guest order; from a stream this works
//! when the block map places blocks in increasing file order (what qemu-img and a fresh
//! VirtualBox export write).

use super::error::{corrupt, limit, rejected, unsupported, Result};
use super::io::{checked_len, le_u32, le_u64, Input, IoBuf, Meter, IO_CHUNK};
use super::sink::Sink;

const VDI_SIGNATURE: u32 = 0xBEDA_107F;
/// The only block size qemu and VirtualBox write (qemu refuses others: "unsupported VDI image").
const VDI_BLOCK_SIZE: u32 = 1 << 20;
/// Block map bytes we hold: 4 bytes per MiB of disk, so 16 MiB covers a 4 TiB VDI. Keeps the
/// converter inside its memory budget; larger VDIs are refused with a clear message.
const MAX_BLOCK_MAP_BYTES: usize = 16 << 20;
const BLOCK_UNALLOCATED: u32 = 0xFFFF_FFFF;
const BLOCK_ZERO: u32 = 0xFFFF_FFFE;

pub(crate) struct VdiReader {
    vsize: u64,
    map_off: u64,
    data_off: u64,
    blocks: u32,
    static_image: bool,
}

impl VdiReader {
    pub(crate) fn open(inp: &mut Input, m: &mut Meter) -> Result<Self> {
        let mut h = [0u8; 0x1D8];
        inp.read_at(0, &mut h, "the VDI header", m)?;
        if le_u32(&h, 0x40) != VDI_SIGNATURE {
            return Err(corrupt("not a VDI file (bad signature)"));
        }
        let image_type = le_u32(&h, 0x4C);
        let static_image = match image_type {
            1 => false,
            2 => true,
            t => return Err(rejected(format!("VDI image type {t} (undo/differencing) is refused"))),
        };
        if h[0x1A8..0x1C8].iter().any(|&b| b != 0) {
            return Err(rejected("the VDI image links to a parent image"));
        }
        let map_off = u64::from(le_u32(&h, 0x154));
        let data_off = u64::from(le_u32(&h, 0x158));
        let vsize = le_u64(&h, 0x170);
        let block_size = le_u32(&h, 0x178);
        let block_extra = le_u32(&h, 0x17C);
        let blocks = le_u32(&h, 0x180);
        if block_size != VDI_BLOCK_SIZE || block_extra != 0 {
            return Err(unsupported(format!("VDI block size {block_size} with {block_extra} extra bytes (only 1 MiB blocks)")));
        }
        if u64::from(blocks) * u64::from(VDI_BLOCK_SIZE) < vsize {
            return Err(corrupt("the VDI block map does not cover the disk size"));
        }
        if map_off < 0x1D8 || data_off < map_off + u64::from(blocks) * 4 {
            return Err(corrupt("VDI block map and data areas overlap"));
        }
        if vsize > super::qcow2w::MAX_VIRTUAL_SIZE {
            return Err(limit(format!("VDI disk size {vsize} is above the limit")));
        }
        Ok(VdiReader { vsize, map_off, data_off, blocks, static_image })
    }

    pub(crate) fn virtual_size(&self) -> u64 {
        self.vsize
    }

    pub(crate) fn pump(&self, inp: &mut Input, sink: &mut dyn Sink, m: &mut Meter) -> Result<()> {
        let used = self.vsize.div_ceil(u64::from(VDI_BLOCK_SIZE));
        let map_len = checked_len(used * 4, MAX_BLOCK_MAP_BYTES, "the VDI block map")?;
        let mut map = vec![0u8; map_len];
        inp.read_at(self.map_off, &mut map, "the VDI block map", m)?;
        let mut buf = IoBuf::new(IO_CHUNK);
        let bs = u64::from(VDI_BLOCK_SIZE);
        let mut i = 0u64;
        while i < used {
            let g = i * bs;
            let glen = bs.min(self.vsize - g);
            let e = le_u32(&map, i as usize * 4);
            if e == BLOCK_UNALLOCATED || e == BLOCK_ZERO {
                if self.static_image {
                    return Err(corrupt("a static VDI has an unallocated block"));
                }
                sink.zeros(glen, m)?;
                i += 1;
                continue;
            }
            if e >= self.blocks {
                return Err(corrupt(format!("VDI block map entry {e} is out of range")));
            }
            // Merge blocks that are contiguous in the file into one read.
            let mut k = i + 1;
            let max = (buf.len() as u64 / bs).max(1);
            while k < used
                && k - i < max
                && u64::from(le_u32(&map, k as usize * 4)) == u64::from(e) + (k - i)
                && u64::from(e) + (k - i) < u64::from(self.blocks)
            {
                k += 1;
            }
            let end = (k * bs).min(self.vsize);
            let len = (end - g) as usize;
            let off = self.data_off + u64::from(e) * bs;
            inp.pass(sink, off, len, &mut buf, "VDI data blocks", m)?;
            i = k;
        }
        Ok(())
    }
}
