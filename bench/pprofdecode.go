package main

// Reading a CPU profile as runtime/pprof writes it (gzipped protobuf,
// profile.proto) with a decoder of its own: the bench's module has no
// github.com/google/pprof, and a CPU profile needs only a few fields.

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"time"
)

// cpuSample is one sampled stack: the CPU time it stands for and its
// frames' function names, leaf first, each inlined call a frame of its own.
type cpuSample struct {
	nanos  int64
	frames []string
}

// cpuProfile is what the bench reads of a CPU profile.
type cpuProfile struct {
	duration time.Duration
	samples  []cpuSample
}

// total returns the CPU time of all samples.
func (p *cpuProfile) total() time.Duration {
	var n int64
	for _, s := range p.samples {
		n += s.nanos
	}
	return time.Duration(n)
}

// parseCPUProfile decodes a profile, gzipped or not, and keeps its
// cpu/nanoseconds values.
func parseCPUProfile(data []byte) (*cpuProfile, error) {
	if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		if data, err = io.ReadAll(zr); err != nil {
			return nil, err
		}
	}
	type rawSample struct {
		locs   []uint64
		values []int64
	}
	var (
		strs       []string
		types      [][2]int64 // sample_type: type and unit, as string indexes
		samples    []rawSample
		locs       = map[uint64][]uint64{} // location id -> function ids, innermost first
		funcs      = map[uint64]int64{}    // function id -> name, as a string index
		durationNs int64
	)
	err := pbFields(data, func(num int, v uint64, b []byte) error {
		switch num {
		case 1: // sample_type
			var vt [2]int64
			err := pbFields(b, func(num int, v uint64, _ []byte) error {
				if num == 1 || num == 2 {
					vt[num-1] = int64(v)
				}
				return nil
			})
			types = append(types, vt)
			return err
		case 2: // sample
			var s rawSample
			err := pbFields(b, func(num int, v uint64, b []byte) error {
				switch num {
				case 1:
					return pbVarints(v, b, func(x uint64) { s.locs = append(s.locs, x) })
				case 2:
					return pbVarints(v, b, func(x uint64) { s.values = append(s.values, int64(x)) })
				}
				return nil
			})
			samples = append(samples, s)
			return err
		case 4: // location
			var id uint64
			var fns []uint64
			err := pbFields(b, func(num int, v uint64, b []byte) error {
				switch num {
				case 1:
					id = v
				case 4: // line
					return pbFields(b, func(num int, v uint64, _ []byte) error {
						if num == 1 {
							fns = append(fns, v)
						}
						return nil
					})
				}
				return nil
			})
			locs[id] = fns
			return err
		case 5: // function
			var id uint64
			var name int64
			err := pbFields(b, func(num int, v uint64, _ []byte) error {
				switch num {
				case 1:
					id = v
				case 2:
					name = int64(v)
				}
				return nil
			})
			funcs[id] = name
			return err
		case 6: // string_table
			strs = append(strs, string(b))
		case 10: // duration_nanos
			durationNs = int64(v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("decoding profile: %v", err)
	}
	str := func(i int64) string {
		if i < 0 || i >= int64(len(strs)) {
			return ""
		}
		return strs[i]
	}
	col := -1
	for i, t := range types {
		if str(t[0]) == "cpu" && str(t[1]) == "nanoseconds" {
			col = i
		}
	}
	if col < 0 {
		return nil, errors.New("not a CPU profile: no cpu/nanoseconds sample type")
	}
	p := &cpuProfile{duration: time.Duration(durationNs)}
	for _, rs := range samples {
		if col >= len(rs.values) {
			return nil, errors.New("decoding profile: a sample lacks its cpu value")
		}
		s := cpuSample{nanos: rs.values[col]}
		for _, l := range rs.locs {
			for _, f := range locs[l] {
				s.frames = append(s.frames, str(funcs[f]))
			}
		}
		p.samples = append(p.samples, s)
	}
	return p, nil
}

// pbFields calls f for each field of the protobuf message b: its number,
// and its value for a varint or its bytes for a length-delimited field.
// Fixed-size fields are skipped; profile.proto's messages have none the
// bench reads.
func pbFields(b []byte, f func(num int, v uint64, data []byte) error) error {
	for len(b) > 0 {
		key, n := pbVarint(b)
		if n <= 0 {
			return errors.New("bad field key")
		}
		b = b[n:]
		num, wire := int(key>>3), key&7
		var v uint64
		var data []byte
		switch wire {
		case 0:
			if v, n = pbVarint(b); n <= 0 {
				return errors.New("bad varint")
			}
			b = b[n:]
		case 1:
			if len(b) < 8 {
				return errors.New("short fixed64")
			}
			b = b[8:]
			continue
		case 2:
			l, n := pbVarint(b)
			if n <= 0 || uint64(len(b)-n) < l {
				return errors.New("bad length")
			}
			data, b = b[n:n+int(l)], b[n+int(l):]
		case 5:
			if len(b) < 4 {
				return errors.New("short fixed32")
			}
			b = b[4:]
			continue
		default:
			return fmt.Errorf("wire type %d", wire)
		}
		if err := f(num, v, data); err != nil {
			return err
		}
	}
	return nil
}

// pbVarints calls f for each value of a repeated varint field, packed
// (data holds them) or not (v is the one value).
func pbVarints(v uint64, data []byte, f func(uint64)) error {
	if data == nil {
		f(v)
		return nil
	}
	for len(data) > 0 {
		x, n := pbVarint(data)
		if n <= 0 {
			return errors.New("bad packed varint")
		}
		f(x)
		data = data[n:]
	}
	return nil
}

// pbVarint decodes a varint; n <= 0 when b does not hold a whole one.
func pbVarint(b []byte) (v uint64, n int) {
	for i, c := range b {
		if i == 10 {
			return 0, -1
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, i + 1
		}
	}
	return 0, 0
}
