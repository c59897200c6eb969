"""Schemas for the text-to-SQL example: 2 to 5 related tables per domain, with the overlapping
column names real databases have (`id` and `name` in most tables, several dates and amounts).

A table is written as `"plural singular"` and its columns as `"column:kind(args)|noun"`:
- `name(pool)`: TEXT, the row's name; pool `person` (first and last names) or a suffix such as
  `Hall` ("Aurora Hall"); values unique within the table.
- `cat(a,b,c)`: TEXT drawn from the values; `text?`-style `?` after any kind allows NULLs.
- `int(lo,hi)` / `real(lo,hi)`: numbers, distinct within the table (so "top 3" has one answer).
- `date`: TEXT 'YYYY-MM-DD' between 2018 and 2025.
- `fk(table)`: INTEGER REFERENCES table(id).
The noun after `|` is how questions name the column (default: the name with spaces).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SPEC = re.compile(r"(?P<name>\w+):(?P<kind>\w+)(?:\((?P<args>[^)]*)\))?(?P<null>\?)?(?:\|(?P<noun>.+))?$")


@dataclass
class Column:
    name: str
    kind: str  # name | cat | int | real | date | fk
    args: list[str]
    nullable: bool
    noun: str

    @property
    def sql_type(self) -> str:
        return {"int": "INTEGER", "fk": "INTEGER", "real": "REAL"}.get(self.kind, "TEXT")


@dataclass
class Table:
    name: str
    entity: str
    columns: list[Column] = field(default_factory=list)

    def of(self, *kinds: str) -> list[Column]:
        return [c for c in self.columns if c.kind in kinds]

    @property
    def label(self) -> Column | None:
        names = self.of("name")
        return names[0] if names else None

    def fk_to(self, other: str) -> Column | None:
        return next((c for c in self.of("fk") if c.args[0] == other), None)


@dataclass
class Domain:
    name: str
    tables: list[Table]

    def table(self, name: str) -> Table:
        return next(t for t in self.tables if t.name == name)


def T(names: str, columns: str) -> Table:
    plural, entity = names.split()
    table = Table(plural, entity)
    for spec in columns.split("; "):
        m = SPEC.match(spec.strip())
        if not m:
            raise ValueError(f"bad column spec {spec!r} in {plural}")
        args = [a.strip() for a in (m["args"] or "").split(",") if a.strip()]
        table.columns.append(Column(m["name"], m["kind"], args, bool(m["null"]),
                                    m["noun"] or m["name"].replace("_", " ")))
    return table


def D(name: str, *tables: Table) -> Domain:
    return Domain(name, list(tables))


TRAIN = [
    D("company",
      T("offices office", "name:name(Office)|office name; city:cat(Lyon,Osaka,Recife,Tampere)|city; opened_on:date|opening date"),
      T("employees employee", "name:name(person); salary:int(32000,140000); hired_on:date|hire date; "
        "department:cat(Sales,Engineering,Finance,Support); office_id:fk(offices); manager_note:cat(remote,part-time)?|note")),
    D("shop",
      T("customers customer", "name:name(person); email:cat(gmail,outlook,proton)|email provider; city:cat(Austin,Denver,Boise); joined_on:date|join date"),
      T("products product", "name:name(Lamp)|product name; price:real(2,400); category:cat(Toys,Garden,Kitchen,Books); stock:int(0,300)|stock level"),
      T("orders order", "customer_id:fk(customers); product_id:fk(products); quantity:int(1,40); ordered_on:date|order date; "
        "status:cat(shipped,pending,returned); amount:real(5,900)|order amount")),
    D("school",
      T("teachers teacher", "name:name(person); subject:cat(math,history,biology,art); salary:int(30000,90000); hired_on:date|hire date"),
      T("students student", "name:name(person); grade:int(6,12)|grade level; birth_date:date|birth date; teacher_id:fk(teachers)|homeroom teacher; email:cat(school,home)?|email type")),
    D("hospital",
      T("wards ward", "name:name(Ward)|ward name; floor:int(0,9); beds:int(4,60)|number of beds"),
      T("doctors doctor", "name:name(person); specialty:cat(Cardiology,Pediatrics,Oncology,Neurology); fee:real(80,500)|consultation fee; ward_id:fk(wards)"),
      T("patients patient", "name:name(person); age:int(1,95); admitted_on:date|admission date; discharged_on:date?|discharge date; ward_id:fk(wards); doctor_id:fk(doctors)")),
    D("music",
      T("artists artist", "name:name(person); country:cat(Canada,Nigeria,Sweden,Chile); debut_year:int(1970,2022)|debut year"),
      T("albums album", "name:name(Sessions)|album title; artist_id:fk(artists); released_on:date|release date; price:real(5,40)"),
      T("tracks track", "name:name(Song)|track title; album_id:fk(albums); duration:int(90,600)|duration in seconds; plays:int(0,90000)|play count; genre:cat(jazz,rock,pop,folk)")),
    D("library",
      T("authors author", "name:name(person); nationality:cat(Irish,Kenyan,Peruvian,Korean); born:int(1900,1995)|birth year"),
      T("books book", "title:name(Chronicles)|title; author_id:fk(authors); pages:int(80,1200)|page count; published_on:date|publication date; genre:cat(Fantasy,History,Poetry,Science)"),
      T("members member", "name:name(person); joined_on:date|membership date; city:cat(Cork,Galway,Sligo)"),
      T("loans loan", "book_id:fk(books); member_id:fk(members); loaned_on:date|loan date; returned_on:date?|return date; fee:real(0,12)|late fee")),
    D("airline",
      T("airports airport", "name:name(Airport)|airport name; city:cat(Lima,Oslo,Cairo,Perth); code:cat(LIM,OSL,CAI,PER)|code"),
      T("flights flight", "number:name(Flight)|flight number; origin_id:fk(airports)|origin airport; departs_on:date|departure date; seats:int(50,400)|number of seats; price:real(60,1500)|ticket price"),
      T("passengers passenger", "name:name(person); nationality:cat(Peruvian,Norwegian,Egyptian); birth_date:date|birth date"),
      T("bookings booking", "flight_id:fk(flights); passenger_id:fk(passengers); booked_on:date|booking date; price:real(50,1400)|price paid; seat_class:cat(economy,business,first)|class")),
    D("restaurant",
      T("restaurants restaurant", "name:name(Bistro)|restaurant name; city:cat(Rome,Kyoto,Austin,Nairobi); rating:real(1,5); opened_on:date|opening date"),
      T("dishes dish", "name:name(Plate)|dish name; restaurant_id:fk(restaurants); price:real(4,60); calories:int(80,1400); vegetarian:cat(yes,no)|vegetarian flag")),
    D("gym",
      T("trainers trainer", "name:name(person); specialty:cat(yoga,boxing,cycling,pilates); hourly_rate:real(20,120)|hourly rate"),
      T("members member", "name:name(person); age:int(16,80); joined_on:date|join date; plan:cat(basic,plus,premium)|membership plan; trainer_id:fk(trainers)?|personal trainer"),
      T("sessions session", "member_id:fk(members); trainer_id:fk(trainers); held_on:date|session date; minutes:int(20,120)|length in minutes")),
    D("real_estate",
      T("agents agent", "name:name(person); agency:cat(Keller,Harbor,Summit)|agency; commission:real(1,6)|commission rate"),
      T("houses house", "address:name(Street)|address; agent_id:fk(agents); price:int(90000,900000); bedrooms:int(1,7)|number of bedrooms; listed_on:date|listing date; sold_on:date?|sale date")),
    D("cinema",
      T("movies movie", "title:name(Story)|title; genre:cat(Drama,Comedy,Horror,Action); runtime:int(70,200)|runtime in minutes; released_on:date|release date; rating:real(1,10)"),
      T("screens screen", "name:name(Screen)|screen name; seats:int(40,400)|number of seats; format:cat(2D,3D,IMAX)"),
      T("showings showing", "movie_id:fk(movies); screen_id:fk(screens); shown_on:date|show date; tickets_sold:int(0,400)|tickets sold; price:real(5,25)|ticket price")),
    D("logistics",
      T("warehouses warehouse", "name:name(Depot)|warehouse name; city:cat(Hamburg,Gdansk,Porto,Ghent); capacity:int(500,20000)"),
      T("trucks truck", "plate:name(Truck)|plate; warehouse_id:fk(warehouses); capacity_kg:int(1000,30000)|capacity in kg; bought_on:date|purchase date"),
      T("drivers driver", "name:name(person); license_class:cat(B,C,CE)|license class; hired_on:date|hire date; salary:int(28000,70000)"),
      T("deliveries delivery", "truck_id:fk(trucks); driver_id:fk(drivers); delivered_on:date|delivery date; weight_kg:int(50,25000)|weight in kg; distance_km:int(5,900)|distance in km")),
    D("university",
      T("departments department", "name:name(Department)|department name; building:cat(North,South,East,West); budget:int(100000,5000000)"),
      T("professors professor", "name:name(person); department_id:fk(departments); salary:int(50000,180000); hired_on:date|hire date; title:cat(assistant,associate,full)|rank"),
      T("courses course", "name:name(Seminar)|course name; department_id:fk(departments); credits:int(1,10); professor_id:fk(professors)?|lecturer"),
      T("students student", "name:name(person); enrolled_on:date|enrollment date; gpa:real(1.5,4)|GPA; department_id:fk(departments)|major department"),
      T("enrollments enrollment", "student_id:fk(students); course_id:fk(courses); grade:int(40,100); semester:cat(spring,fall)")),
    D("garage",
      T("owners owner", "name:name(person); phone:cat(mobile,landline)?|phone type; city:cat(Leeds,York,Bath)"),
      T("cars car", "model:name(Coupe)|model; owner_id:fk(owners); year:int(1995,2024)|model year; mileage:int(1000,300000); fuel:cat(petrol,diesel,electric)|fuel type"),
      T("repairs repair", "car_id:fk(cars); repaired_on:date|repair date; cost:real(40,4000); kind:cat(brakes,engine,tyres,paint)|repair type")),
    D("farm",
      T("fields field", "name:name(Field)|field name; hectares:real(1,80)|area in hectares; soil:cat(clay,sand,loam)|soil type"),
      T("crops crop", "name:name(Crop)|crop name; field_id:fk(fields); planted_on:date|planting date; harvested_on:date?|harvest date; yield_tons:real(1,300)|yield in tons")),
    D("events",
      T("venues venue", "name:name(Arena)|venue name; city:cat(Madrid,Accra,Hanoi,Quito); capacity:int(200,60000)"),
      T("events event", "name:name(Festival)|event name; venue_id:fk(venues); held_on:date|event date; ticket_price:real(10,300)|ticket price; category:cat(concert,sport,theatre,talk)"),
      T("attendees attendee", "name:name(person); event_id:fk(events); registered_on:date|registration date; paid:real(0,300)|amount paid")),
    D("bank",
      T("branches branch", "name:name(Branch)|branch name; city:cat(Zurich,Geneva,Basel); opened_on:date|opening date"),
      T("clients client", "name:name(person); branch_id:fk(branches); birth_date:date|birth date; segment:cat(retail,private,business)"),
      T("accounts account", "client_id:fk(clients); balance:real(0,90000); opened_on:date|opening date; type:cat(checking,savings)|account type; closed_on:date?|closing date")),
    D("sports",
      T("teams team", "name:name(United)|team name; city:cat(Turin,Porto,Lille,Bruges); founded:int(1880,2010)|founding year"),
      T("players player", "name:name(person); team_id:fk(teams); position:cat(goalkeeper,defender,midfielder,forward); goals:int(0,60); salary:int(20000,900000); birth_date:date|birth date"),
      T("matches match", "home_team_id:fk(teams)|home team; played_on:date|match date; attendance:int(500,60000); home_goals:int(0,6)|home goals")),
    D("hotel",
      T("hotels hotel", "name:name(Inn)|hotel name; city:cat(Lisbon,Prague,Seoul); stars:int(1,5)|star rating"),
      T("rooms room", "number:name(Room)|room number; hotel_id:fk(hotels); rate:real(40,600)|nightly rate; beds:int(1,4)|number of beds"),
      T("guests guest", "name:name(person); country:cat(Spain,Ghana,Japan,Peru); email:cat(gmail,yahoo)?|email provider"),
      T("stays stay", "room_id:fk(rooms); guest_id:fk(guests); checked_in:date|check-in date; nights:int(1,21)|number of nights; total:real(40,9000)|total price")),
    D("software",
      T("projects project", "name:name(Project)|project name; started_on:date|start date; budget:int(10000,900000); status:cat(active,paused,done)"),
      T("engineers engineer", "name:name(person); level:cat(junior,senior,staff); salary:int(40000,220000); project_id:fk(projects)"),
      T("bugs bug", "title:name(Crash)|title; project_id:fk(projects); reported_on:date|report date; fixed_on:date?|fix date; severity:int(1,5); engineer_id:fk(engineers)?|assignee")),
    D("zoo",
      T("enclosures enclosure", "name:name(Enclosure)|enclosure name; area:int(50,5000)|area in square meters; climate:cat(tropical,arid,temperate)"),
      T("animals animal", "name:name(person)|animal name; species:cat(lion,zebra,otter,parrot); enclosure_id:fk(enclosures); born_on:date|birth date; weight:real(1,900)|weight in kg")),
    D("charity",
      T("donors donor", "name:name(person); city:cat(Dublin,Leeds,Oslo); first_gift_on:date|first gift date"),
      T("campaigns campaign", "name:name(Appeal)|campaign name; goal:int(1000,500000)|goal amount; starts_on:date|start date; ends_on:date|end date"),
      T("donations donation", "donor_id:fk(donors); campaign_id:fk(campaigns); amount:real(5,20000); given_on:date|donation date; method:cat(card,cash,transfer)|payment method")),
    D("vineyard",
      T("vineyards vineyard", "name:name(Estate)|estate name; region:cat(Rioja,Douro,Mosel,Barossa); hectares:real(2,150)|area in hectares; founded:int(1820,2015)|founding year"),
      T("wines wine", "name:name(Reserve)|wine name; vineyard_id:fk(vineyards); grape:cat(Merlot,Riesling,Syrah,Tempranillo)|grape variety; vintage:int(1990,2023)|vintage year; "
        "abv:real(9,16)|alcohol by volume; price:real(8,250)|bottle price; sold_out_on:date?|sell-out date"),
      T("tastings tasting", "wine_id:fk(wines); tasted_on:date|tasting date; score:int(50,100)|critic score; critic:cat(Parker,Jancis,Suckling); bottles:int(1,48)|bottles opened")),
    D("space",
      T("agencies agency", "name:name(Agency)|agency name; country:cat(India,France,Japan,Brazil); founded:int(1950,2015)|founding year; budget_musd:int(50,30000)|budget in million USD"),
      T("rockets rocket", "name:name(Launcher)|rocket name; agency_id:fk(agencies); payload_kg:int(300,60000)|payload capacity in kg; stages:int(1,4)|number of stages; first_flight:date|first flight date"),
      T("missions mission", "name:name(Mission)|mission name; rocket_id:fk(rockets); launched_on:date|launch date; ended_on:date?|end date; "
        "target:cat(Moon,Mars,orbit,asteroid)|destination; cost_musd:real(20,4000)|cost in million USD"),
      T("astronauts astronaut", "name:name(person); agency_id:fk(agencies); mission_id:fk(missions)?|assigned mission; born:int(1955,2000)|birth year; eva_hours:real(0,80)|spacewalk hours")),
    D("insurance",
      T("brokers broker", "name:name(person); firm:cat(Aegis,Beacon,Crest)|brokerage; commission:real(2,15)|commission percentage; licensed_on:date|license date"),
      T("holders holder", "name:name(person)|policyholder name; birth_date:date|birth date; city:cat(Tulsa,Fresno,Omaha,Reno); smoker:cat(yes,no)?|smoker status"),
      T("policies policy", "number:name(Policy)|policy number; holder_id:fk(holders)|policyholder; broker_id:fk(brokers)?; kind:cat(auto,home,life,travel)|policy type; "
        "premium:real(120,9000)|annual premium; starts_on:date|start date; lapsed_on:date?|lapse date"),
      T("claims claim", "policy_id:fk(policies); filed_on:date|filing date; amount:real(100,250000)|claimed amount; paid:real(0,200000)|amount paid out; outcome:cat(approved,denied,open)")),
    D("esports",
      T("squads squad", "name:name(Gaming)|team name; region:cat(EU,NA,Korea,Brazil); founded:int(2000,2022)|founding year; sponsor:cat(Razor,Volt,Nova)?|main sponsor"),
      T("players player", "handle:name(Byte)|gamer tag; squad_id:fk(squads)|team; role:cat(carry,support,tank,jungle); joined_on:date|join date; salary:int(15000,400000)"),
      T("tournaments tournament", "name:name(Cup)|tournament name; game:cat(Dota,Valorant,Fortnite)|game title; starts_on:date|start date; "
        "prize_pool:int(10000,3000000)|prize pool; city:cat(Seoul,Katowice,Austin)|host city"),
      T("placements placement", "squad_id:fk(squads)|team; tournament_id:fk(tournaments); place:int(1,16)|final placement; winnings:real(0,900000)|prize money; kills:int(20,900)|total kills")),
    D("orchestra",
      T("halls hall", "name:name(Hall)|hall name; city:cat(Vienna,Leipzig,Turku,Bologna); seats:int(300,2800)|seating capacity; built:int(1870,2019)|year built"),
      T("orchestras orchestra", "name:name(Philharmonic)|orchestra name; founded:int(1842,2010)|founding year; home_hall_id:fk(halls)|home hall; budget:int(200000,9000000)|annual budget"),
      T("musicians musician", "name:name(person); orchestra_id:fk(orchestras); instrument:cat(violin,cello,oboe,horn,timpani); joined_on:date|joining date; "
        "retired_on:date?|retirement date; salary:int(30000,120000)"),
      T("concerts concert", "title:name(Serenade)|concert title; orchestra_id:fk(orchestras); hall_id:fk(halls)|venue; performed_on:date|concert date; "
        "conductor:cat(Nagano,Alsop,Dudamel)|guest conductor"),
      T("tickets ticket", "concert_id:fk(concerts); sold_on:date|sale date; price:real(15,320)|ticket price; section:cat(stalls,balcony,box)|seating section; "
        "discount:cat(student,senior)?|discount type")),
    D("hiking",
      T("parks park", "name:name(Park)|park name; region:cat(Alps,Andes,Rockies,Atlas)|mountain range; area_km2:int(20,9000)|area in square km; established:int(1890,2015)|year established"),
      T("trails trail", "name:name(Trail)|trail name; park_id:fk(parks); length_km:real(1,60)|length in km; elevation_gain:int(50,2500)|elevation gain in meters; "
        "difficulty:cat(easy,moderate,hard); closed_since:date?|closure date"),
      T("hikes hike", "leader:name(person)|guide name; trail_id:fk(trails); hiked_on:date|hike date; group_size:int(1,25)|group size; hours:real(0.5,14)|duration in hours; "
        "weather:cat(sunny,rain,snow,fog)?")),
    D("power_grid",
      T("plants plant", "name:name(Works)|plant name; fuel:cat(gas,hydro,wind,solar,coal)|energy source; capacity_mw:int(20,3000)|capacity in MW; commissioned:int(1960,2023)|commissioning year"),
      T("substations substation", "name:name(Substation)|substation name; plant_id:fk(plants)|supplying plant; voltage_kv:int(33,765)|voltage in kV; district:cat(north,harbour,airport,central)"),
      T("outages outage", "substation_id:fk(substations); began_on:date|outage date; restored_on:date?|restoration date; customers:int(50,80000)|customers affected; "
        "cause:cat(storm,fault,overload,maintenance); mwh_lost:real(0.5,900)|energy lost in MWh")),
    D("elections",
      T("parties party", "name:name(Party)|party name; founded:int(1880,2020)|founding year; ideology:cat(left,centre,right,green); members:int(1000,900000)|membership"),
      T("districts district", "name:name(District)|district name; region:cat(coast,valley,uplands,metro); voters:int(5000,400000)|registered voters"),
      T("candidates candidate", "name:name(person); party_id:fk(parties); district_id:fk(districts); votes:int(100,200000)|votes received; born:int(1945,2002)|birth year; "
        "elected:cat(yes,no)|elected flag; withdrew_on:date?|withdrawal date")),
    D("payroll",
      T("workers worker", "name:name(person); role:cat(cashier,cook,cleaner,driver)|job role; hourly_wage:real(11,48)|hourly wage; started_on:date|start date; left_on:date?|leaving date"),
      T("timesheets timesheet", "worker_id:fk(workers); week_of:date|week starting; hours:real(4,60)|hours worked; overtime:real(0,20)|overtime hours; approved:cat(yes,no,pending)|approval status"),
      T("payslips payslip", "worker_id:fk(workers); paid_on:date|pay date; gross:real(300,9000)|gross pay; tax:real(30,2500)|tax withheld; method:cat(bank,cheque)|payment method")),
    D("research",
      T("funders funder", "name:name(Foundation)|funder name; country:cat(Canada,Denmark,Chile,Ghana); kind:cat(public,private,charity)|funder type"),
      T("labs lab", "name:name(Lab)|lab name; field:cat(physics,genomics,ecology,robotics)|research field; head:name(person)|lab head; staff:int(3,120)|staff count"),
      T("grants grant", "title:name(Initiative)|grant title; funder_id:fk(funders); lab_id:fk(labs); amount:int(20000,5000000)|award amount; awarded_on:date|award date; ends_on:date?|end date")),
    D("observatory",
      T("telescopes telescope", "name:name(Telescope)|telescope name; site:cat(Atacama,Hawaii,Canary,Karoo); aperture_m:real(0.5,39)|aperture in meters; first_light:int(1950,2024)|first light year"),
      T("observations observation", "telescope_id:fk(telescopes); observed_on:date|observation date; target:cat(galaxy,nebula,comet,exoplanet)|target type; "
        "exposure_s:int(30,36000)|exposure in seconds; seeing:real(0.3,3)|seeing in arcseconds; quality:cat(good,fair,poor)?|data quality")),
    D("cookbook",
      T("cookbooks cookbook", "title:name(Kitchen)|cookbook title; cuisine:cat(Thai,Greek,Mexican,Ethiopian); published:int(1975,2024)|publication year; price:real(9,60)"),
      T("recipes recipe", "name:name(Stew)|recipe name; cookbook_id:fk(cookbooks); prep_min:int(5,240)|preparation time in minutes; serves:int(1,12)|servings; "
        "kcal:int(90,1500)|calories per serving; course:cat(starter,main,dessert)")),
    D("recycling",
      T("centres centre", "name:name(Yard)|centre name; town:cat(Bristol,Dundee,Exeter,Hull); opened:int(1985,2022)|year opened; bays:int(2,40)|number of bays"),
      T("collections collection", "centre_id:fk(centres); collected_on:date|collection date; material:cat(glass,paper,plastic,metal); tonnes:real(0.2,40)|weight in tonnes; "
        "contaminated:cat(yes,no)?|contamination flag; revenue:real(0,8000)")),
    D("ski_resort",
      T("resorts resort", "name:name(Peak)|resort name; country:cat(Austria,Canada,Japan,Chile); top_m:int(1200,3900)|summit elevation in meters; opened:int(1930,2015)|year opened"),
      T("lifts lift", "name:name(Chair)|lift name; resort_id:fk(resorts); kind:cat(chairlift,gondola,tbar)|lift type; riders_per_hour:int(400,4000)|hourly capacity; "
        "length_m:int(200,5000)|length in meters; serviced_on:date?|last service date")),
    D("marathon",
      T("races race", "name:name(Marathon)|race name; city:cat(Boston,Berlin,Nairobi,Sydney); run_on:date|race date; entry_fee:real(20,250)|entry fee"),
      T("runners runner", "name:name(person); country:cat(Kenya,Ethiopia,Japan,USA); born:int(1960,2006)|birth year; club:cat(Striders,Harriers,Pacers)?|running club"),
      T("results result", "race_id:fk(races); runner_id:fk(runners); bib:int(1,30000)|bib number; finish_s:int(7200,21600)?|finish time in seconds; "
        "category:cat(open,masters,elite)|age category")),
    D("film_festival",
      T("festivals festival", "name:name(Fest)|festival name; city:cat(Cannes,Busan,Locarno,Toronto); first_held:int(1932,2010)|first edition year; jury_size:int(3,15)|jury size"),
      T("films film", "title:name(Reel)|film title; director:name(person); country:cat(Iran,Korea,Mexico,Senegal); runtime:int(70,210)|runtime in minutes; "
        "budget_k:int(50,90000)|budget in thousands"),
      T("awards award", "festival_id:fk(festivals); film_id:fk(films); prize:cat(jury,audience,director,actor)|prize category; awarded_on:date|ceremony date; "
        "purse:real(0,50000)|prize money")),
]

VAL = [
    D("rental",
      T("stores store", "name:name(Store)|store name; city:cat(Graz,Linz,Wels); opened_on:date|opening date"),
      T("bikes bike", "model:name(Cruiser)|model; store_id:fk(stores); daily_rate:real(8,90)|daily rate; gears:int(1,30)|number of gears"),
      T("rentals rental", "bike_id:fk(bikes); rented_on:date|rental date; days:int(1,14)|number of days; total:real(8,1200)|total price")),
    D("museum",
      T("museums museum", "name:name(Museum)|museum name; city:cat(Lisbon,Prague,Quito); visitors:int(1000,900000)|yearly visitors"),
      T("exhibits exhibit", "name:name(Gallery)|exhibit name; museum_id:fk(museums); opened_on:date|opening date; closes_on:date?|closing date; price:real(0,30)|entry price")),
]

TEST = [
    D("clinic",
      T("clinics clinic", "name:name(Clinic)|clinic name; city:cat(Malmo,Bergen,Aarhus); opened_on:date|opening date"),
      T("vets vet", "name:name(person); clinic_id:fk(clinics); fee:real(30,250)|visit fee; hired_on:date|hire date"),
      T("pets pet", "name:name(person)|pet name; species:cat(dog,cat,rabbit,parrot); born_on:date|birth date; weight:real(0.5,70)|weight in kg"),
      T("visits visit", "pet_id:fk(pets); vet_id:fk(vets); visited_on:date|visit date; cost:real(20,900); reason:cat(checkup,vaccine,surgery)")),
    D("publishing",
      T("publishers publisher", "name:name(Press)|publisher name; country:cat(India,Mexico,Poland); founded:int(1850,2015)|founding year"),
      T("magazines magazine", "title:name(Monthly)|title; publisher_id:fk(publishers); price:real(2,20); launched_on:date|launch date; issues:int(4,52)|issues per year")),
    D("transit",
      T("lines line", "name:name(Line)|line name; color:cat(red,blue,green,yellow)|colour; opened_on:date|opening date"),
      T("stations station", "name:name(Station)|station name; line_id:fk(lines); daily_riders:int(200,90000)|daily riders; accessible:cat(yes,no)|step-free access"),
      T("incidents incident", "station_id:fk(stations); happened_on:date|incident date; delay_minutes:int(1,180)|delay in minutes; kind:cat(signal,power,medical)|incident type; resolved_on:date?|resolution date")),
    D("theatre",
      T("plays play", "title:name(Tale)|title; playwright:cat(Ibsen,Chekhov,Wilde,Lorca); premiered_on:date|premiere date; runtime:int(60,200)|runtime in minutes"),
      T("actors actor", "name:name(person); born:int(1940,2005)|birth year; agent:cat(Wave,Stage,Prime)?|agency"),
      T("roles role", "play_id:fk(plays); actor_id:fk(actors); name:name(Role)|role name; fee:int(500,20000)|fee")),
]
