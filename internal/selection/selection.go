// Package selection reads and writes the command line's lists of layers and heads
// ("0,3-5") and its memory sizes ("8GiB", "500MB"). Its errors are one sentence that names
// the flag and shows the right spelling.
package selection

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Parse reads a list of non-negative numbers and inclusive ranges of units ("layer",
// "head") given with flag: "3", "0,3-5", "2-2". It returns them sorted, each once. An
// empty list or entry, a negative number, a backwards range ("3-1") and anything but digits
// are errors; whether the numbers exist is Check's.
func Parse(flag, unit, spec string) ([]int, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, fmt.Errorf("%s is empty; give numbers and ranges, e.g. %s 0,3-5 (leave %s out for all)", flag, flag, flag)
	}
	var out []int
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("%s %q has an empty entry; separate numbers and ranges with single commas, e.g. %s 0,3-5", flag, spec, flag)
		}
		if n, err := strconv.Atoi(part); err == nil && n < 0 {
			return nil, fmt.Errorf("%s %d is not a %s; %ss are numbered from 0 (leave %s out for all)", flag, n, unit, unit, flag)
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, errA := number(lo)
		b, errB := a, error(nil)
		if isRange {
			b, errB = number(hi)
		}
		if errA != nil || errB != nil {
			return nil, fmt.Errorf("%s takes numbers from 0 and ranges such as 0,3-5; %q is neither", flag, part)
		}
		if b < a {
			return nil, fmt.Errorf("%s %s is a backwards range; write it low to high: %d-%d", flag, part, b, a)
		}
		if b-a >= 1<<20 {
			return nil, fmt.Errorf("%s %s spans more than a million numbers; no model has that many", flag, part)
		}
		for n := a; n <= b; n++ {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// number reads a non-negative decimal integer (digits only: no sign, no spaces inside).
func number(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("not a number: %q", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > math.MaxInt32 {
		return 0, fmt.Errorf("out of range: %q", s)
	}
	return n, nil
}

// Check says, for the first number in list that is n or more, that it does not exist:
// "--layer 12 does not exist; the model has 12 layers (0-11)". where names what has the n
// units ("the model", "layer 3"); unit is singular ("layer", "head").
func Check(flag string, list []int, n int, where, unit string) error {
	for _, v := range list {
		if v < n {
			continue
		}
		switch n {
		case 0:
			return fmt.Errorf("%s %d does not exist; %s has no %ss", flag, v, where, unit)
		case 1:
			return fmt.Errorf("%s %d does not exist; %s has 1 %s (0)", flag, v, where, unit)
		}
		return fmt.Errorf("%s %d does not exist; %s has %d %ss (0-%d)", flag, v, where, n, unit, n-1)
	}
	return nil
}

// Format writes a sorted list back in Parse's syntax, runs as ranges: [0 1 2 3 5] is
// "0-3,5".
func Format(list []int) string {
	var b strings.Builder
	for i := 0; i < len(list); {
		j := i
		for j+1 < len(list) && list[j+1] == list[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(list[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(list[j]))
		}
		i = j + 1
	}
	return b.String()
}

// sizeUnits are the suffixes ParseSize reads, lower-cased: decimal (kB, MB, GB, TB), binary
// (KiB, MiB, GiB, TiB, and K, M, G, T as docker and ulimit read them).
var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
	"ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

// ParseSize reads a memory size given with flag: a positive number and a unit, "8GiB",
// "500MB", "1.5 GB", "2g"; bytes without a unit. Units are read in any case.
func ParseSize(flag, s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	v, err := strconv.ParseFloat(num, 64)
	mult, ok := sizeUnits[unit]
	if err != nil || !ok {
		return 0, fmt.Errorf("%s takes a size such as 8GiB, 500MB or 2G; %q is not one", flag, s)
	}
	b := v * mult
	if b > math.MaxInt64/2 {
		return 0, fmt.Errorf("%s %s is too large (attnscope counts up to %s); give a size such as %s 8GiB", flag, s, Size(math.MaxInt64/2), flag)
	}
	if b < 1 {
		return 0, fmt.Errorf("%s %s is not a size attnscope can use; give at least 1 byte, e.g. %s 8GiB", flag, s, flag)
	}
	return int64(b), nil
}

// Size writes bytes for a sentence: "9.0 GiB", "512.0 MiB", "2.9 KiB" (binary units).
func Size(b int64) string {
	switch {
	case b >= 1<<40:
		return fmt.Sprintf("%.1f TiB", float64(b)/(1<<40))
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", b)
}

// Count writes a count with thousands separated by commas: 4096 is "4,096".
func Count(n int) string {
	s := strconv.Itoa(n)
	if n < 0 {
		return "-" + Count(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
